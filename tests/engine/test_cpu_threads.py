"""Freeing a thread's idle OpenMP workers (cpu_threads): what the canvas does before its stream thread runs."""

import ctypes
import os
import shutil
import threading

import pytest
import torch

from semdraw_widget.engine import cpu_threads
from waiting import wait_until


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def parallel_work() -> None:
    torch.ones(1 << 22).sin_()  # far above torch's grain size: every thread of the team takes part


@pytest.fixture
def two_torch_threads():
    if cpu_threads._loaded_libgomp() is None:
        pytest.skip("this torch does not run on GNU OpenMP (its Linux wheels do)")
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def release_on_a_thread_of_its_own() -> dict:
    """OS thread counts around a release by a thread that ran parallel work (no other test's pool is its own)."""
    outcome = {}

    def run():
        parallel_work()
        outcome["with_pool"] = os_threads()
        outcome["released"] = cpu_threads.release_idle_workers()
        wait_until(lambda: os_threads() < outcome["with_pool"], timeout=5)
        outcome["after"] = os_threads()
        parallel_work()  # still correct work, on a new team
        outcome["again"] = os_threads()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return outcome


def assert_one_worker_ended_and_came_back(outcome: dict) -> None:
    assert outcome["released"] is True
    assert outcome["after"] == outcome["with_pool"] - 1  # its one worker (2 torch threads) ended
    assert outcome["again"] == outcome["with_pool"]


def test_release_ends_the_calling_threads_idle_workers_and_torch_makes_new_ones(two_torch_threads):
    assert_one_worker_ended_and_came_back(release_on_a_thread_of_its_own())


def test_release_is_harmless_on_a_thread_without_workers(two_torch_threads):
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(cpu_threads.release_idle_workers()))
    thread.start()
    thread.join()
    assert outcome == [True]


def test_torchs_own_library_is_chosen_when_another_wheel_loaded_a_copy_first(two_torch_threads, tmp_path):
    """scikit-learn or xgboost wheels load their own libgomp, whose path may sort first: pausing that copy would
    free nothing of torch's and still report success."""
    torch_library = cpu_threads._loaded_libgomp()._name
    copy = tmp_path / "aaa" / "libgomp-0123abcd.so.1"
    copy.parent.mkdir()
    shutil.copy(torch_library, copy)
    ctypes.CDLL(str(copy))
    cpu_threads._loaded_libgomp.cache_clear()
    try:
        assert cpu_threads._loaded_libgomp()._name == torch_library
        assert_one_worker_ended_and_came_back(release_on_a_thread_of_its_own())
    finally:
        cpu_threads._loaded_libgomp.cache_clear()
