"""Why per-parameter control matters, measured: `python -m layerwise.demo`.

A small CNN is pretrained on scikit-learn's 8x8 digits 0-4, then fine-tuned
to digits 5-9 from 5 labelled images per class with several strategies
(`strategies.STRATEGIES`). Each strategy's learning rate is chosen on a
validation split from one grid; every strategy then runs on 5 seeds at its
chosen rate and at the grid's highest rate, and the demo reports the target
accuracy, what is left of the source task, the time per step and the
optimizer's state, as measured.

Modules: `data` (splits), `model` (network, pretraining), `strategies`
(the table of strategies), `finetune` (one run), `experiment` (the
protocol), `report` (tables), `plot` (figure), `cli` (command line).
"""
