"""The train component: one (architecture x dataset x recipe x seed) trial per task."""
