"""The demo model's evaluation: its scenes, its region measure and its command.

The measure is checked against pictures whose answer is known: the world generator's own pictures of a
scene score high, the same pictures judged against each other's prompts score low.
"""

from __future__ import annotations

import json

import numpy as np

from semdraw_widget.engine.models.demo import evaluate


def test_random_scenes_have_two_to_four_distinct_layers_each_big_enough_to_measure():
    rng = np.random.default_rng(0)
    for _ in range(50):
        scene = evaluate.random_scene(rng, 256)
        assert 2 <= len(scene.prompts) <= 4 and scene.masks.shape == (len(scene.prompts), 256, 256)
        assert len(set(scene.prompts) | {scene.background}) == len(scene.prompts) + 1
        assert all(mask.sum() > 48 * 48 for mask in scene.masks)
        shown = [mask for _, mask in scene.regions()]
        assert np.array_equal(np.sum(shown, axis=0), np.ones((256, 256)))  # every pixel shows exactly one region


def test_interior_keeps_the_pixels_a_border_away_from_the_edge():
    square = np.zeros((64, 64), bool)
    square[10:50, 10:50] = True
    inside = evaluate.interior(square, 16)
    assert inside.sum() == 8 * 8 and inside[26:34, 26:34].all()
    assert not evaluate.interior(square, 20).any()


def test_the_world_s_own_pictures_score_high_and_low_against_other_prompts(demo, classifier):
    rng, draw = np.random.default_rng(3), np.random.default_rng(4)
    right = wrong_prompts = cells = 0
    for _ in range(6):
        scene = evaluate.random_scene(rng, 256)
        image = evaluate.through_autoencoder(demo, evaluate.ground_truth(scene, draw))
        prompts = scene.prompts + [scene.background]
        prompts = prompts[1:] + prompts[:1]  # every region judged against another region's prompt
        shuffled = evaluate.Scene(prompts[:-1], scene.masks, prompts[-1])
        for (r, _, n), (r_other, _, _) in zip(evaluate.region_scores(classifier, image, scene),
                                              evaluate.region_scores(classifier, image, shuffled)):
            right, wrong_prompts, cells = right + r, wrong_prompts + r_other, cells + n
    assert right / cells > 0.85
    assert wrong_prompts / cells < 0.15


def test_the_evaluate_command_prints_and_writes_every_figure(tmp_path, capsys):
    from semdraw_widget.engine.models.demo.__main__ import main

    out = tmp_path / "figures.json"
    assert main(["evaluate", "--scenes", "2", "--size", "128", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["prompt_adherence"]["total"] == 99
    assert figures["classifier"].endswith("classifier.safetensors")  # the shipped model's own
    assert len(figures["region_adherence"]) == 5
    for name, setting in figures["region_adherence"].items():
        assert setting["cells"] > 0 and 0.0 <= setting["share"] <= setting["colour_share"] <= 1.0, name
    assert figures["stream_vs_oneshot"]["scenes"] == 2
    assert 0.0 < figures["ground_truth_region_adherence"]["share"] <= 1.0
    printed = capsys.readouterr().out
    for words in ("prompt adherence", "region adherence", "stream against one-shot", "the world's own pictures"):
        assert words in printed


def test_the_evaluate_command_judges_with_the_classifier_it_is_given(tmp_path):
    import torch

    from semdraw_widget.engine.models.demo import WEIGHTS_DIR
    from semdraw_widget.engine.models.demo.__main__ import main
    from semdraw_widget.engine.models.demo.classifier import Classifier

    # a classifier that calls every patch by one name, so it finds at most one prompt of 99 right
    one_name = Classifier.load(WEIGHTS_DIR / "classifier.safetensors")
    with torch.no_grad():
        for head in (one_name.heads.colour, one_name.heads.texture):
            head.weight.zero_()
            head.bias.copy_(torch.arange(head.bias.numel(), 0, -1.0))
    one_name.save(tmp_path / "one-name.safetensors")
    out = tmp_path / "figures.json"
    assert main(["evaluate", "--scenes", "2", "--size", "128", "--json", str(out),
                 "--classifier", str(tmp_path / "one-name.safetensors")]) == 0
    figures = json.loads(out.read_text())
    assert figures["classifier"] == str(tmp_path / "one-name.safetensors")
    assert figures["prompt_adherence"]["correct"] <= 1
