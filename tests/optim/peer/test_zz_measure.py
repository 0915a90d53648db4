"""Collect every test of the candidate files that uses an optimizer (measurement)."""
import pathlib
import keras, pytest
from tests.optim.peer import harness, training

FILES = """callbacks/backup_and_restore_test.py callbacks/callback_test.py callbacks/csv_logger_test.py
callbacks/early_stopping_test.py callbacks/lambda_callback_test.py callbacks/learning_rate_scheduler_test.py
callbacks/model_checkpoint_test.py callbacks/monitor_callback_test.py callbacks/reduce_lr_on_plateau_test.py
callbacks/swap_ema_weights_test.py callbacks/terminate_on_nan_test.py callbacks/tensorboard_test.py
trainers/trainer_test.py models/model_test.py saving/saving_api_test.py saving/saving_lib_test.py
saving/file_editor_test.py legacy/saving/legacy_h5_format_test.py""".split()
VARIANT = harness.VARIANTS[0]

@pytest.fixture(autouse=True)
def _hook():
    with training.compile_hook(VARIANT):
        yield

for rel in FILES:
    module = harness.load(training.KERAS_SRC / rel, VARIANT)
    for name, cls in harness.case_classes(module).items():
        for m in harness.case_method_names(cls):
            if not training.uses_an_optimizer(getattr(cls, m)):
                setattr(cls, m, None)
        globals()[f"{pathlib.Path(rel).stem}.{name}"] = cls
import pathlib
