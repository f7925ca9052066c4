"""Networks: conv trunks (backbones), classifiers and detectors."""
