"""The pass contract suite (issue #17): every registered pass, built-in or third-party, through the same checks."""
