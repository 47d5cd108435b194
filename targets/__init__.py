"""Target families: each module holds one family's capabilities and TVM lowering."""
