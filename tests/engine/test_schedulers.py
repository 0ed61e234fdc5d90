import pytest
import torch
from diffusers import LCMScheduler

from semdraw_widget.engine.schedulers import DEFAULT_SCHEDULER_CONFIG, LCMSchedule

T_INDEX = (0, 4, 12, 25, 37)


def test_lcm_schedule_matches_diffusers():
    ours = LCMSchedule(DEFAULT_SCHEDULER_CONFIG)
    reference = LCMScheduler(**DEFAULT_SCHEDULER_CONFIG)
    reference.set_timesteps(50)
    assert ours.timesteps == reference.timesteps.tolist()
    steps = ours.prepare(T_INDEX, torch.device("cpu"), torch.float64)
    assert steps.timesteps.tolist() == [999, 919, 759, 499, 259]
    for i, t in enumerate(steps.timesteps.tolist()):
        c_skip, c_out = reference.get_scalings_for_boundary_condition_discrete(t)
        assert steps.c_skip[i].item() == pytest.approx(float(c_skip), rel=1e-6)
        assert steps.c_out[i].item() == pytest.approx(float(c_out), rel=1e-6)
        abar = reference.alphas_cumprod[t].double()
        assert steps.alpha[i].item() == pytest.approx(abar.sqrt().item(), rel=1e-6)
        assert steps.noise_levels[i] == pytest.approx((1 - abar).sqrt().item(), rel=1e-6)
    for count in (5, 4, 1):  # a run of another length takes diffusers' LCM timesteps for that many steps
        reference.set_timesteps(count)
        assert ours.with_steps(count).timesteps == reference.timesteps.tolist()


def test_x0_and_add_noise_formulas():
    steps = LCMSchedule(DEFAULT_SCHEDULER_CONFIG).prepare((0, 25), torch.device("cpu"), torch.float64)
    x_t = torch.full((2, 1, 1, 1), 2.0, dtype=torch.float64)
    eps = torch.full((2, 1, 1, 1), 0.5, dtype=torch.float64)
    x0 = steps.x0(x_t, eps)
    for i in range(2):
        a, b, cs, co = steps.alpha[i], steps.beta[i], steps.c_skip[i], steps.c_out[i]
        assert x0[i].item() == pytest.approx((co * (2.0 - b * 0.5) / a + cs * 2.0).item())
    noised = steps.add_noise(torch.ones(1, 1, 1, 1, dtype=torch.float64), eps)
    assert noised[1].item() == pytest.approx((steps.alpha[1] + steps.beta[1] * 0.5).item())


@pytest.mark.parametrize("bad", [(4, 0), (0, 0), (0, 50), (-1, 3), ()])
def test_t_index_list_must_be_increasing_and_in_range(bad):
    with pytest.raises(ValueError, match="t_index_list"):
        LCMSchedule(DEFAULT_SCHEDULER_CONFIG).prepare(bad, torch.device("cpu"), torch.float32)


def test_the_lcm_schedule_reads_epsilon_and_v_prediction_and_refuses_others():
    with pytest.raises(ValueError, match="epsilon- and v-prediction.*'sample'"):
        LCMSchedule({**DEFAULT_SCHEDULER_CONFIG, "prediction_type": "sample"})
    assert LCMSchedule({**DEFAULT_SCHEDULER_CONFIG, "prediction_type": "epsilon"}).prediction_type == "epsilon"
    assert LCMSchedule({**DEFAULT_SCHEDULER_CONFIG, "prediction_type": "v_prediction"}).prediction_type == "v_prediction"
