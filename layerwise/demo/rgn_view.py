"""What Auto-RGN sees before its first step: each block's relative
gradient norm, read with `layerwise`'s own diagnostics.

Auto-RGN gives each kernel the rate `||g|| / ||w||` over the largest of
them. Measured on the pretrained network, these ratios say where it will
move the weights most, and so whether it can find the block the shift
needs.
"""

import keras
import numpy as np

import layerwise as lw
from layerwise.demo import data as data_lib
from layerwise.demo import model as model_lib


class RelativeGradientNorms:
    """Measures each block kernel's relative gradient norm on a task.

    One compiled model serves every task: a step of SGD at rate 0 with a
    rule per kernel and `log=("grad_norm",)` records each kernel's
    gradient norm and leaves the weights as they are.

    Args:
        pretrained: A `Pretrained`.
    """

    def __init__(self, pretrained):
        self.net = model_lib.FineTuningModel(pretrained)
        rules = [lw.Rule(block.kernel, name=block.name) for block in self.net.blocks]
        self.optimizer = lw.LayerwiseOptimizer(
            keras.optimizers.SGD(0.0), rules, log=("grad_norm",)
        )
        self.net.model.compile(self.optimizer, model_lib.LOSS)

    def __call__(self, task, labels_per_class, seed):
        """The ratios on `labels_per_class` labelled images per class of
        `task` (those of run `seed`), in one batch.

        Returns:
            `{block name: ||g|| / ||w|| over the largest}`, input side first.
        """
        labelled = data_lib.labelled_subset(task.pool, labels_per_class, seed)
        self.net.model.train_on_batch(labelled.x, labelled.y)
        norms = self.optimizer.diagnostics()
        ratios = {
            block.name: norms[f"grad_norm/{block.name}"]
            / float(np.linalg.norm(keras.ops.convert_to_numpy(block.kernel)))
            for block in self.net.blocks
        }
        top = max(ratios.values())
        return {name: ratio / top for name, ratio in ratios.items()}
