"""The verdicts: a table's trials read back from their run directories, each claim judged
(comparisons, collapse, instability, the kNN monitor), and the table's report and the index
rendered from them."""
