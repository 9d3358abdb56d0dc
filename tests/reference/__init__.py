"""NumPy float64 reference math, one module per op family, written for readability.
Every op test compares against these; nothing here is tuned for speed."""
