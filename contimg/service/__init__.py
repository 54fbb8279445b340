"""The always-on asyncio service: lifecycle and supervision, the scheduler, the reader /
processor / writer tasks, recording into the state databases, health and disk, the folder
watcher, batch and replay runs."""
