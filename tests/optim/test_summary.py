"""`summary()` prints the plan that runs."""

import re

import keras

import layerwise as lw
from tests import helpers


def test_summary_table_shows_every_setting():
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.AdamW(0.01, weight_decay=0.1),
        [
            lw.Rule(model.get_layer("l0"), lr_scale=0.25, name="body"),
            lw.Rule("l1/.*", frozen=True, name="frozen"),
            lw.Rule(".*/bias", weight_decay=0.0, gradient=lw.clip_by_norm(2.0), name="bias"),
        ],
    )
    opt.build(model.trainable_variables)
    lines = []
    opt.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "6 variables, 2 frozen, 4 update groups, 3 rules" in text
    cells = [re.split(r"\s{2,}", line) for line in text.splitlines()]
    rows = {c[0]: c[1:] for c in cells if c[0].startswith("l")}
    assert rows["l0/kernel"] == ["(6, 5)", "body", "AdamW", "0.25", "0.0025", "0.1", "-", "no"]
    assert rows["l0/bias"] == [
        "(5,)", "body, bias", "AdamW", "0.25", "0.0025", "off (rule)", "ClipByNorm(max_norm=2.0)",
        "no",
    ]
    assert rows["l1/kernel"] == ["(5, 4)", "frozen", "-", "-", "-", "-", "-", "yes"]
    assert rows["l2/kernel"] == ["(4, 2)", "-", "AdamW", "1", "0.01", "0.1", "-", "no"]


def test_wd_column_tells_a_rule_turning_decay_off_from_an_optimizer_without_decay():
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.Adam(0.01),
        [lw.Rule("l0/.*", weight_decay=0.0, name="off"),
         lw.Rule("l2/.*", optimizer=keras.optimizers.AdamW(0.01, weight_decay=0.1), name="on")],
    )
    opt.build(model.trainable_variables)
    rows = {r["path"]: r for r in opt.summary_rows()}
    assert [(rows[p]["weight_decay"], rows[p]["decay_set_by_rule"]) for p in
            ("l0/kernel", "l1/kernel", "l2/kernel")] == [(None, True), (None, False), (0.1, False)]
    lines = []
    opt.summary(print_fn=lines.append)
    cells = {c[0]: c for c in (re.split(r"\s{2,}", line) for line in lines[0].splitlines())}
    assert [cells[p][6] for p in ("l0/kernel", "l1/kernel", "l2/kernel")] == ["off (rule)", "-", "0.1"]


def test_repr_names_the_optimizers_and_stages_and_rules_show_schedules():
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(
        keras.optimizers.AdamW(0.01),
        [lw.Rule("l0/.*", lr_scale=0.7 ** 3, name="body"),
         lw.Rule("l1/.*", lr_scale=lw.warmup(0.5, 10), name="warm"),
         lw.Rule("l2/.*", optimizer=keras.optimizers.SGD(0.1), name="head")],
        accumulate_steps=2, ema=0.9,
    )
    assert repr(opt) == (
        'LayerwiseOptimizer "layerwise_optimizer" over AdamW (base learning rate 0.01, '
        "step 0); rule optimizers: SGD(learning_rate=0.1); accumulate_steps=2, "
        "ema=0.9; 3 rules"
    ).replace("layerwise_optimizer", opt.name)
    assert [repr(r) for r in opt.rules] == [
        "Rule('l0/.*', lr_scale=0.343, name='body')",
        "Rule('l1/.*', lr_scale=LinearWarmup(scale=0.5, warmup_steps=10), name='warm')",
        "Rule('l2/.*', optimizer=SGD(learning_rate=0.1), name='head')",
    ]


def test_summary_rows_follow_runtime_changes():
    model = helpers.mlp()
    opt = lw.LayerwiseOptimizer(keras.optimizers.SGD(0.1), [lw.Rule("l0/.*", lr_scale=0.5, name="body")])
    opt.build(model.trainable_variables)
    opt.set_lr_scale("body", 0.1)
    opt.learning_rate = 0.2
    rows = {r["path"]: r for r in opt.summary_rows()}
    assert abs(rows["l0/kernel"]["effective_lr"] - 0.02) < 1e-7
