"""Operations: an operator scrapes /metrics and polls /healthz on the port they chose."""

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.config import ConfigError, load_settings
from tests.harness import Natty

GOOD_TOKEN = "MTAx" + "a" * 60


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus scrape: (name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_show_a_finished_job_its_duration_the_queue_and_the_acknowledgement(tmp_path):
    async with Natty.running(tmp_path, metrics_port=0) as n:
        await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a lighthouse at dusk"))
        (job,) = [j for j in await n.bot.storage.recent_jobs(n.alice.id) if j.model == "test-text-to-image"]
        await n.bot.engine.wait(job.id)  # every listener has seen it end
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{n.bot.ops.port}/metrics") as response:
                assert response.status == 200 and response.content_type == "text/plain"
                scrape = samples(await response.text())
            async with http.get(f"http://127.0.0.1:{n.bot.ops.port}/healthz") as response:
                assert response.status == 200
                health = await response.json()
    model = (("model", "test-text-to-image"),)
    assert scrape[("natty_job_duration_seconds_count", model)] == 1
    assert scrape[("natty_jobs_finished_total", (("model", "test-text-to-image"), ("state", "done")))] == 1
    lanes = [labels for name, labels in scrape if name == "natty_queue_depth"]
    assert lanes and all(scrape[("natty_queue_depth", labels)] == 0 for labels in lanes)
    assert scrape[("natty_interaction_ack_seconds_count", ())] >= 1
    assert health == {"status": "ok", "gateway_connected": True, "queue_depth": 0, "database_reachable": True}


async def test_healthz_is_503_when_the_database_cannot_be_reached(tmp_path):
    async with Natty.running(tmp_path, metrics_port=0) as n:
        await n.bot.storage.close()  # as if the database went away
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{n.bot.ops.port}/healthz") as response:
                assert response.status == 503
                health = await response.json()
        assert health["status"] == "unhealthy" and health["database_reachable"] is False
        await n.bot.storage.open()  # the bot closes it on the way out


async def test_rate_limits_from_discord_are_counted(tmp_path):
    async with Natty.running(tmp_path, metrics_port=0) as n:
        n.server.inject_429("/channels/", retry_after=0.01)
        await n.bot.get_partial_messageable(n.general.id).send("hello")
        text = generate(n)
    assert samples(text)[("natty_discord_rate_limited_total", (("scope", "user"),))] == 1


def generate(n: Natty) -> str:
    from prometheus_client import generate_latest

    return generate_latest(n.bot.ops.registry).decode()


@pytest.mark.parametrize("port", ["http", "0", "65536", "-1"])
def test_a_bad_metrics_port_stops_start_up_with_one_line(port):
    with pytest.raises(ConfigError) as err:
        load_settings({"DISCORD_TOKEN": GOOD_TOKEN, "NATTY_METRICS_PORT": port}, env_file=None)
    assert err.value.problems == [f"NATTY_METRICS_PORT={port!r} must be a port number from 1 to 65535 "
                                  "(empty: no metrics)"]


def test_metrics_are_off_unless_a_port_is_given_and_listen_on_localhost():
    assert load_settings({"DISCORD_TOKEN": GOOD_TOKEN}, env_file=None).metrics_port is None
    s = load_settings({"DISCORD_TOKEN": GOOD_TOKEN, "NATTY_METRICS_PORT": "9464"}, env_file=None)
    assert (s.metrics_host, s.metrics_port) == ("127.0.0.1", 9464)


def test_a_rest_proxy_base_must_name_the_api_version():
    s = load_settings({"DISCORD_TOKEN": GOOD_TOKEN, "DISCORD_API_BASE": "http://nirn:8080/api/v10/"}, env_file=None)
    assert s.api_base == "http://nirn:8080/api/v10"
    with pytest.raises(ConfigError) as err:
        load_settings({"DISCORD_TOKEN": GOOD_TOKEN, "DISCORD_API_BASE": "http://nirn:8080"}, env_file=None)
    assert "must end with the API version" in err.value.problems[0]
