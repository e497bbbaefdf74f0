"""The key centre: the master, key rows, personalisation and card pairings."""
