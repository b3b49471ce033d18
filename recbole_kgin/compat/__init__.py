"""RecBole 1.2.1 on current Python packages, and its KGCN and KGAT made faster with the
same results."""
