"""Verification: the coordinate check and its verdict (coord), and deliberately broken schemes that prove the
check catches each rule's failure (faults)."""
