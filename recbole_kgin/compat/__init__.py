"""RecBole 1.2.1 on current Python packages, and its KGCN, KGNNLS, KGAT and LightGCN made
faster with the same results."""
