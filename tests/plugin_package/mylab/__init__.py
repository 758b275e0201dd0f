"""mylab: a toy architecture, data set, loss and callback for segkit."""
