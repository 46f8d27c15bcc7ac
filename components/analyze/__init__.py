"""The analyze component: gather a study's trial results and run the APR analysis on them."""
