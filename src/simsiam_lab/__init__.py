"""Reproduce and extend the ablations of SimSiam (Chen & He, CVPR 2021)."""
