"""Surgical fine-tuning, measured: `python -m layerwise.demo`.

A small CNN is pretrained on scikit-learn's 8x8 digits 0-4, then
fine-tuned from 10 labelled images per class to three kinds of
distribution shift, as in Lee et al., "Surgical Fine-Tuning Improves
Adaptation to Distribution Shifts" (ICLR 2023): input-level (corrupted
images), feature-level (new sub-populations of the same classes) and
output-level (labels remapped). Each strategy of `strategies.STRATEGIES`
(full fine-tuning, tuning one block alone, layer-wise recipes, gradual
unfreezing, Auto-RGN, the trust ratio) has its learning rate chosen on a
validation split from one grid, then runs on 5 seeds; the demo prints the
table shift x strategy and what it supports, and draws it.

Modules: `data` (source task and shifts), `model` (network, pretraining),
`strategies` (the table of strategies), `finetune` (one run), `experiment`
(the protocol), `report` (tables and findings), `plot` (figure), `cli`
(command line).
"""
