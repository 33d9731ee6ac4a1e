"""Results files: the Nova/lighteval results JSON and details export, and summaries."""
