"""Training/inference data path: case preparation, 2.5D slabs, splits, augmentation."""
