"""The Space's public API through gradio_client, against the app served on 127.0.0.1 with tiny models."""

import os
import socket
import subprocess
import sys
import time

import pytest
from space_helpers import APP_PATH, DIGITS, MISSING, POINTS, SAMPLER_2D, SAMPLER_4D, SAMPLER_MISSING

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


def test_the_three_endpoints_are_public(client):
    api = client.view_api(print_info=False, return_format="dict")
    endpoints = api["named_endpoints"]
    assert {"/sample", "/likelihood", "/energy_sampler"} <= set(endpoints)
    parameters = endpoints["/sample"]["parameters"]
    names = [p["parameter_name"] for p in parameters]
    assert names == ["model", "num_steps", "seed", "batch_size", "teacher_steps", "ml_guidance_scale", "ml_guidance_steps",
                     "log_prob_steps"]
    assert [p["parameter_default"] for p in parameters[-3:]] == [0, 1, 0]  # guidance and re-scoring off unless asked
    names = [p["parameter_name"] for p in endpoints["/energy_sampler"]["parameters"]]
    assert names == ["sampler", "num_steps", "num_samples", "seed"]
    names = [p["parameter_name"] for p in endpoints["/likelihood"]["parameters"]]
    assert names == ["model", "image", "sketch", "points", "points_file", "reference", "seed"]
    # The slow teacher solve is opt-in for API callers too.
    reference = next(p for p in endpoints["/likelihood"]["parameters"] if p["parameter_name"] == "reference")
    assert reference["parameter_has_default"] and reference["parameter_default"] is False
    # Helpers (example buttons, the plot refresh) stay out of the API.
    assert not api["unnamed_endpoints"]


def test_sample_digits(client):
    grid, table, summary, details, teacher = client.predict(
        model=DIGITS, num_steps=4, seed=5, batch_size=9, teacher_steps=6, api_name="/sample"
    )
    assert os.path.isfile(grid) and os.path.isfile(teacher)
    assert details["nfe"] == 4 and details["teacher"]["nfe"] == 6
    assert len(details["log_prob"]) == 9 and len(table["data"]) == 9
    assert table["headers"] == ["sample", "log p (nats)", "bits/dim"]
    assert "4 network call(s)" in summary


def test_sample_points(client):
    grid, table, summary, details, teacher = client.predict(
        model=POINTS, num_steps=1, seed=0, batch_size=1000, api_name="/sample"
    )
    assert os.path.isfile(grid) and teacher is None
    assert details["nfe"] == 1 and len(details["log_prob"]) == 1000


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(model=DIGITS, batch_size=100), "at most 64"),
        (dict(model=POINTS, batch_size=10**6), "Batch size: Value 1000000 is greater than maximum value 2000"),
        (dict(model=DIGITS, num_steps=9), "Sampling steps"),
        (dict(model=MISSING), "'missing checkpoint' checkpoint is not available"),
        (dict(model="no such model"), "Model: unknown model 'no such model'; choose one of: tiny digits"),
    ],
)
def test_sample_bad_input(client, kwargs, message):
    with pytest.raises(AppError, match=message):
        client.predict(api_name="/sample", **kwargs)


def test_sample_positional_callers_keep_working_and_guidance_counts(client):
    """The guidance parameters came last, with defaults: a call with the five earlier ones, by position, still works."""
    *_, details, teacher = client.predict(DIGITS, 1, 0, 2, 0, api_name="/sample")
    assert details["nfe"] == 1 and details["ml_guidance_scale"] == 0 and teacher is None
    _, _, summary, details, _ = client.predict(
        model=DIGITS, num_steps=2, batch_size=2, ml_guidance_scale=0.2, ml_guidance_steps=1, api_name="/sample"
    )
    assert details["nfe"] == 4 and "in **4 network call(s)**" in summary and "plus 2 for 1 self-guidance step" in summary
    *_, details, _ = client.predict(model=DIGITS, num_steps=2, batch_size=2, log_prob_steps=3, api_name="/sample")
    assert details["nfe"] == 5 and details["log_prob_steps"] == 3


def test_energy_sampler(client):
    figure, summary, details = client.predict(
        sampler=SAMPLER_2D, num_steps=2, num_samples=50, seed=1, api_name="/energy_sampler"
    )
    assert os.path.isfile(figure)
    assert details["nfe"] == 2 and details["num_samples"] == 50 and details["plot"] == "log-density"
    assert details["true_log_Z"] == 0.0 and "log Z estimate" in summary and "Effective sample size" in summary
    *_, details = client.predict(SAMPLER_4D, 1, 20, api_name="/energy_sampler")  # by position, default seed
    assert details["exact_samples_shown"] is True and details["seed"] == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_samples=0), "Number of samples: Value 0 is less than minimum value 1"),
        (dict(num_samples=10**5), "Number of samples: Value 100000 is greater than maximum value 4000"),
        (dict(num_steps=17), "Sampling steps"),
        (dict(num_samples="many"), "Number of samples: expected a number, got 'many'"),
        (dict(sampler="no such sampler"), "Sampler: unknown sampler 'no such sampler'; choose one of: tiny sampler"),
        (dict(sampler=SAMPLER_MISSING), "'missing sampler checkpoint' checkpoint is not available"),
    ],
)
def test_energy_sampler_bad_input(client, kwargs, message):
    arguments = dict(sampler=SAMPLER_2D, num_steps=1, num_samples=10)
    arguments.update(kwargs)
    with pytest.raises(AppError, match=message):
        client.predict(api_name="/energy_sampler", **arguments)


def test_likelihood_digit_upload(client, digit_png):
    table, summary, preview, details = client.predict(
        model=DIGITS, image=handle_file(str(digit_png)), reference=True, seed=1, api_name="/likelihood"
    )
    assert [row[1] for row in table["data"]][:4] == [1, 2, 4, 8]
    assert table["data"][4][0].startswith("Teacher ODE")
    assert all(isinstance(row[2], float) for row in table["data"])
    notes = " ".join(details["input_notes"])
    assert "Inverted" in notes and "Resized from 96x96" in notes and "Cropped" not in notes
    assert "to 8x8" in notes and "17 levels" in notes
    assert os.path.isfile(preview)


def test_likelihood_points_text_and_file(client, tmp_path):
    table, summary, preview, details = client.predict(
        model=POINTS, points="x1, x2\n0.5, -1\n1, 1\n", reference=True, api_name="/likelihood"
    )
    assert details["num_inputs"] == 2 and details["reference"]["nfe"] == 2
    path = tmp_path / "points.csv"
    path.write_text("0.5, -1\n1, 1\n")
    _, _, _, from_file = client.predict(model=POINTS, points_file=handle_file(str(path)), api_name="/likelihood")
    assert from_file["results"][0]["bits_per_dim"] == details["results"][0]["bits_per_dim"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(model=DIGITS), "No image"),
        (dict(model=POINTS, points="1, nan"), "NaN"),
        (dict(model=POINTS, points="1, 2\nthree, 4"), "Line 2: 'three' is not a number"),
        (dict(model=POINTS, points="1, 2, 3"), "2-D points"),
        (dict(model=MISSING, points="1, 2"), "not available"),
    ],
)
def test_likelihood_bad_input(client, kwargs, message):
    with pytest.raises(AppError, match=message):
        client.predict(api_name="/likelihood", **kwargs)


def test_likelihood_rejects_a_non_image_file_and_keeps_serving(client, tmp_path):
    path = tmp_path / "not-an-image.png"
    path.write_text("this is text, not a PNG")
    with pytest.raises(AppError, match="Could not read the uploaded file as an image"):
        client.predict(model=DIGITS, image=handle_file(str(path)), api_name="/likelihood")
    # Still serving.
    assert client.predict(model=DIGITS, batch_size=1, api_name="/sample")[3]["nfe"] == 2


def test_a_burst_of_requests_queues(client):
    jobs = [client.submit(model=DIGITS, num_steps=1, seed=i, batch_size=4, api_name="/sample") for i in range(6)]
    results = [job.result(timeout=120) for job in jobs]
    assert [r[3]["seed"] for r in results] == list(range(6))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_python_app_py_serves_with_missing_checkpoints(tmp_path):
    """``python spaces_app/app.py`` with GRADIO_SERVER_PORT; missing checkpoints give a clear error, not a crash."""
    port = _free_port()
    env = dict(
        os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1", HF_HUB_OFFLINE="1",
        GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1",
        F2D2_DIGITS_MODEL=str(tmp_path / "no-digits"), F2D2_CHECKERBOARD_MODEL=str(tmp_path / "no-checkerboard"),
    )
    with open(tmp_path / "server.log", "w") as log:
        process = subprocess.Popen([sys.executable, str(APP_PATH)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the app did not start within 90 s:\n" + (tmp_path / "server.log").read_text())
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        assert {"/sample", "/likelihood", "/energy_sampler"} <= set(
            client.view_api(print_info=False, return_format="dict")["named_endpoints"])
        with pytest.raises(AppError, match=r"f2d2-digits.*checkpoint is not available: no folder at .*no-digits"):
            client.predict(model="f2d2-digits (F2D2, 8x8 digits)", api_name="/sample")
        with pytest.raises(AppError, match="f2d2-checkerboard.*not available"):
            client.predict(model="f2d2-checkerboard (F2D2, 2-D checkerboard)", points="1, 2", api_name="/likelihood")
        # The earlier names still work for old client code.
        with pytest.raises(AppError, match="f2d2-checkerboard.*not available"):
            client.predict(model="checkerboard (2-D points)", points="1, 2", api_name="/likelihood")
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
