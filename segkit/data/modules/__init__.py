"""The LightningDataModules: synthetic shapes and EM slices, ISBI 2012, PASCAL VOC, your own folders, and patches (windows of any of them)."""
