"""Reading DSA-110 subband files: names, groups, the h5py reader."""
