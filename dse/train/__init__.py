"""Training one network: the Lightning fit and its recipes, the datasets (ImageNet trees and litdata shards
included), DDP, fault injection for tests, and latency."""
