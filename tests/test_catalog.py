"""The shipped accelerator catalog: data sanity, normalisation, resolve() and its errors, rendering."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from datetime import date
from importlib.resources import files
from pathlib import Path

import pytest

from cloudtune.catalog import (
    PROVIDERS,
    Catalog,
    CatalogError,
    Offer,
    load_catalog,
    parse_catalog,
    render_table,
)
from cloudtune.errors import InvalidInput, UnsupportedSpec

NEUTRAL = ["T4", "L4", "A10G", "A100-40GB", "A100-80GB", "H100", "H200", "TPU-v5e", "TPU-v5p", "TPU-v6e"]


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return load_catalog()


# ----------------------------------------------------------------------------- data
def test_data_files_ship_as_package_resources() -> None:
    data = files("cloudtune.catalog")
    assert data.joinpath("offers.csv").is_file()
    assert data.joinpath("accelerators.csv").is_file()


def test_load_is_cached(cat: Catalog) -> None:
    assert load_catalog() is cat


def test_as_of_is_iso_date(cat: Catalog) -> None:
    assert date.fromisoformat(cat.as_of).isoformat() == cat.as_of


def test_regions(cat: Catalog) -> None:
    assert cat.regions == {"aws": "us-east-1", "gcp": "us-central1", "azure": "eastus"}


def test_accelerators_in_catalog_order(cat: Catalog) -> None:
    assert cat.accelerators() == NEUTRAL


@pytest.mark.parametrize("name", NEUTRAL)
def test_every_accelerator_is_offered_somewhere(cat: Catalog, name: str) -> None:
    assert cat.providers_with(name), f"{name} has no offer"
    assert cat.offers(accelerator=name)


def test_who_offers_what(cat: Catalog) -> None:
    for tpu in ("TPU-v5e", "TPU-v5p", "TPU-v6e"):
        assert cat.providers_with(tpu) == ["gcp"]
    assert cat.providers_with("A10G") == ["aws"]
    assert cat.providers_with("L4") == ["aws", "gcp"]
    assert cat.providers_with("H100") == ["aws", "gcp", "azure"]
    assert cat.providers_with("cpu") == list(PROVIDERS)


def test_prices_non_negative_and_spot_not_above_on_demand(cat: Catalog) -> None:
    for o in cat.offers():
        for price in (o.usd_per_hour, o.spot_usd_per_hour):
            assert price is None or price >= 0, o
        if o.usd_per_hour is not None and o.spot_usd_per_hour is not None:
            assert o.spot_usd_per_hour <= o.usd_per_hour, o


def test_offer_fields_are_sane(cat: Catalog) -> None:
    for o in cat.offers():
        assert o.provider in PROVIDERS
        assert o.vcpus > 0 and o.memory_gb > 0
        if o.accelerator == "cpu":
            assert o.count == 0 and o.accelerator_type is None
        else:
            assert o.count >= 1 and o.accelerator_memory_gb > 0
        if o.provider == "gcp" and o.accelerator != "cpu":
            assert o.accelerator_type, f"{o.instance_type} needs a Vertex accelerator_type"
        if o.provider != "gcp":
            assert o.accelerator_type is None and o.tpu_topology is None
        if o.accelerator.startswith("TPU-"):
            assert o.tpu_topology
            chips = 1
            for dim in o.tpu_topology.split("x"):
                chips *= int(dim)
            assert chips == o.count, o


def test_instance_types_unique_per_provider(cat: Catalog) -> None:
    seen = Counter((o.provider, o.instance_type.lower()) for o in cat.offers())
    assert [k for k, n in seen.items() if n > 1] == []


def test_one_cpu_offer_per_provider(cat: Catalog) -> None:
    expected = {"aws": "ml.m5.xlarge", "gcp": "n1-standard-4", "azure": "Standard_D4s_v3"}
    for provider, instance_type in expected.items():
        (offer,) = cat.offers(provider, "cpu")
        assert offer.instance_type == instance_type and offer.usd_per_hour


def test_no_tpu_outside_gcp_and_no_a10g_l4_on_azure(cat: Catalog) -> None:
    assert not [o for o in cat.offers("aws") if o.accelerator.startswith("TPU-")]
    assert not [o for o in cat.offers("azure") if o.accelerator.startswith("TPU-")]
    assert cat.offers("azure", "A10G") == [] and cat.offers("azure", "L4") == []


def test_offers_are_json_friendly(cat: Catalog) -> None:
    row = asdict(cat.offers()[0])
    assert set(row) == {f for f in Offer.__dataclass_fields__}


# ----------------------------------------------------------------------------- names
@pytest.mark.parametrize(
    ("raw", "neutral"),
    [
        ("t4", "T4"),
        ("L4", "L4"),
        ("a10g", "A10G"),
        ("a100", "A100-40GB"),
        ("A100_80GB", "A100-80GB"),
        ("a100-80gb", "A100-80GB"),
        ("h100", "H100"),
        ("h100-80gb", "H100"),
        ("H200", "H200"),
        ("v5e", "TPU-v5e"),
        ("tpu-v5e", "TPU-v5e"),
        ("TPU-V5E", "TPU-v5e"),
        ("tpu_v5p", "TPU-v5p"),
        ("v6e", "TPU-v6e"),
        ("  Trillium ", "TPU-v6e"),
        ("CPU", "cpu"),
    ],
)
def test_normalize_aliases(cat: Catalog, raw: str, neutral: str) -> None:
    assert cat.normalize(raw) == neutral


def test_normalize_unknown_lists_names_and_guesses(cat: Catalog) -> None:
    with pytest.raises(CatalogError) as err:
        cat.normalize("h10")
    assert "did you mean" in err.value.message and "H100" in err.value.message
    assert err.value.fix and "TPU-v6e" in err.value.fix and "cpu" in err.value.fix
    assert isinstance(err.value, UnsupportedSpec) and isinstance(err.value, InvalidInput)
    assert err.value.exit_code == 2


def test_unknown_provider(cat: Catalog) -> None:
    with pytest.raises(CatalogError) as err:
        cat.resolve("oracle", "H100", 8)
    assert "aws" in (err.value.fix or "")


def test_peak_bf16(cat: Catalog) -> None:
    assert cat.peak_bf16_tflops("h100") == 989
    assert cat.peak_bf16_tflops("A100-80GB") == 312
    assert cat.peak_bf16_tflops("v5e") == 197
    assert cat.peak_bf16_tflops("T4") is None  # no bf16 on Turing
    assert cat.peak_bf16_tflops("cpu") is None
    info = cat.info("H200")
    assert info is not None and info.memory_gb == 141 and info.vendor == "nvidia"


# ----------------------------------------------------------------------------- resolve
@pytest.mark.parametrize(
    ("provider", "accelerator", "count", "instance_type"),
    [
        ("aws", "T4", 1, "ml.g4dn.xlarge"),
        ("aws", "l4", 8, "ml.g6.48xlarge"),
        ("aws", "A10G", 4, "ml.g5.12xlarge"),
        ("aws", "a100", 8, "ml.p4d.24xlarge"),
        ("aws", "A100-80GB", 8, "ml.p4de.24xlarge"),
        ("aws", "H100", 8, "ml.p5.48xlarge"),
        ("aws", "H200", 8, "ml.p5e.48xlarge"),
        ("gcp", "L4", 1, "g2-standard-4"),
        ("gcp", "T4", 2, "n1-standard-16"),
        ("gcp", "A100-40GB", 16, "a2-megagpu-16g"),
        ("gcp", "A100-80GB", 4, "a2-ultragpu-4g"),
        ("gcp", "H100", 8, "a3-highgpu-8g"),
        ("gcp", "H200", 8, "a3-ultragpu-8g"),
        ("gcp", "v5e", 8, "ct5lp-hightpu-8t"),
        ("gcp", "TPU-v5p", 4, "ct5p-hightpu-4t"),
        ("gcp", "v6e", 1, "ct6e-standard-1t"),
        ("azure", "T4", 4, "Standard_NC64as_T4_v3"),
        ("azure", "A100-80GB", 1, "Standard_NC24ads_A100_v4"),
        ("azure", "A100-80GB", 8, "Standard_ND96amsr_A100_v4"),
        ("azure", "A100-40GB", 8, "Standard_ND96asr_v4"),
        ("azure", "H100", 2, "Standard_NC80adis_H100_v5"),
        ("azure", "H100", 8, "Standard_ND96isr_H100_v5"),
        ("azure", "H200", 8, "Standard_ND96isr_H200_v5"),
    ],
)
def test_resolve_happy_paths(cat: Catalog, provider: str, accelerator: str, count: int, instance_type: str) -> None:
    offer = cat.resolve(provider, accelerator, count)
    assert offer.instance_type == instance_type
    assert offer.provider == provider and offer.count == count
    assert offer.accelerator == cat.normalize(accelerator)


def test_resolve_gcp_carries_vertex_fields(cat: Catalog) -> None:
    l4 = cat.resolve("gcp", "L4", 1)
    assert l4.accelerator_type == "NVIDIA_L4" and l4.tpu_topology is None
    v5e = cat.resolve("gcp", "TPU-v5e", 4)
    assert v5e.accelerator_type == "TPU_V5_LITEPOD" and v5e.tpu_topology == "2x2"
    assert cat.resolve("gcp", "a100", 1).accelerator_type == "NVIDIA_TESLA_A100"
    assert cat.resolve("gcp", "H100", 8).accelerator_type == "NVIDIA_H100_80GB"


def test_azure_h100_nvl_memory(cat: Catalog) -> None:
    assert cat.resolve("azure", "H100", 1).accelerator_memory_gb == 94
    assert cat.resolve("azure", "H100", 8).accelerator_memory_gb == 80


@pytest.mark.parametrize("count", [0, 1, 8])
def test_resolve_cpu(cat: Catalog, count: int) -> None:
    assert cat.resolve("aws", "cpu", count).instance_type == "ml.m5.xlarge"
    assert cat.resolve("gcp", "CPU", count).instance_type == "n1-standard-4"
    assert cat.resolve("azure", "cpu", count).instance_type == "Standard_D4s_v3"


def test_resolve_missing_accelerator_names_the_providers_that_have_it(cat: Catalog) -> None:
    with pytest.raises(CatalogError) as err:
        cat.resolve("aws", "TPU-v5e", 4)
    assert err.value.message == "resources.accelerator: aws has no TPU-v5e"
    assert err.value.field == "resources.accelerator" and err.value.reason == "aws has no TPU-v5e"
    assert err.value.fix is not None and "--provider gcp" in err.value.fix
    assert "H100" in err.value.fix and "TPU-v6e" not in err.value.fix
    assert "To fix:" in str(err.value)

    with pytest.raises(CatalogError) as err:
        cat.resolve("azure", "v5e", 1)
    assert "gcp" in (err.value.fix or "")

    with pytest.raises(CatalogError) as err:
        cat.resolve("azure", "L4", 1)
    assert "--provider aws or --provider gcp" in (err.value.fix or "")


def test_resolve_bad_count_lists_offered_counts(cat: Catalog) -> None:
    with pytest.raises(CatalogError) as err:
        cat.resolve("aws", "H100", 1)
    assert "8" in err.value.message and "not 1" in err.value.message
    assert "H100:8" in (err.value.fix or "")

    with pytest.raises(CatalogError) as err:
        cat.resolve("gcp", "L4", 3)
    assert "1, 2, 4 or 8" in err.value.message

    with pytest.raises(CatalogError) as err:
        cat.resolve("aws", "H100", 16)
    assert "nodes: 2" in (err.value.fix or "")


def test_by_instance_type(cat: Catalog) -> None:
    offer = cat.by_instance_type("aws", "ml.g5.xlarge")
    assert offer is not None and offer.accelerator == "A10G" and offer.count == 1
    offer = cat.by_instance_type("azure", "standard_nc24ads_a100_v4")
    assert offer is not None and offer.accelerator == "A100-80GB"
    assert cat.by_instance_type("gcp", "ml.g5.xlarge") is None
    assert cat.by_instance_type("gcp", "no-such-machine") is None


# ----------------------------------------------------------------------------- render
def test_render_table(cat: Catalog) -> None:
    text = render_table(cat.offers("aws", "H200") + cat.offers("gcp", "TPU-v5e"))
    lines = text.splitlines()
    assert lines[0].split() == ["PROVIDER", "ACCELERATOR", "COUNT", "INSTANCE", "TYPE", "TOPOLOGY", "MEM/DEVICE", "GB",
                                "VCPUS", "$/H", "SPOT", "$/H"]
    assert "ml.p5e.48xlarge" in text and "ct5lp-hightpu-4t" in text
    v5e = next(line for line in lines if "ct5lp-hightpu-4t" in line)
    assert v5e.split()[4] == "2x2"  # the TPU slice topology
    p5e = next(line for line in lines if "ml.p5e.48xlarge" in line)
    assert p5e.split()[-2:] == ["-", "-"]  # unpublished prices
    assert len({len(line) for line in lines[1:]}) == 1  # right-aligned price columns line up


def test_render_empty() -> None:
    assert "INSTANCE TYPE" in render_table([])


# ----------------------------------------------------------------------------- parsing
_ACCELS = "# as_of: 2026-01-02\nname,vendor,memory_gb,peak_bf16_tflops,aliases\nX1,acme,8,100,x|ex-one\n"
_HEADER = "provider,accelerator,count,instance_type,accelerator_memory_gb,vcpus,memory_gb,usd_per_hour,spot_usd_per_hour,accelerator_type,tpu_topology\n"


def test_parse_catalog_custom() -> None:
    offers = "# as_of: 2026-01-02\n# regions: aws=us-west-2\n" + _HEADER + "aws,X1,2,big.box,8,16,64,3.5,,,\naws,cpu,0,small.box,0,2,8,0.1,0.05,,\n"
    c = parse_catalog(offers, _ACCELS)
    assert c.as_of == "2026-01-02" and c.regions == {"aws": "us-west-2"}
    assert c.normalize("EX_ONE") == "X1"
    offer = c.resolve("aws", "x", 2)
    assert offer.usd_per_hour == 3.5 and offer.spot_usd_per_hour is None
    with pytest.raises(CatalogError) as err:
        c.resolve("gcp", "X1", 2)
    assert "--provider aws" in (err.value.fix or "")


def test_parse_catalog_rejects_bad_data() -> None:
    with pytest.raises(ValueError):
        parse_catalog("# as_of: soon\n" + _HEADER, _ACCELS)
    with pytest.raises(ValueError):
        parse_catalog("# as_of: 2026-01-02\n" + _HEADER + "aws,Y9,1,a.box,8,4,16,1,,,\n", _ACCELS)
    with pytest.raises(ValueError):
        parse_catalog("# as_of: 2026-01-02\nprovider,accelerator\naws,X1\n", _ACCELS)


def test_resolve_picks_the_cheapest_machine_type(cat: Catalog) -> None:
    """Of the machine types carrying the same accelerators, resolve() takes the lowest on-demand price (issue 5:
    L4:1 on aws is ml.g6.xlarge at $1.01/h, not ml.g6.2xlarge at $1.22/h)."""
    assert cat.resolve("aws", "L4", 1).instance_type == "ml.g6.xlarge"
    for offer in cat.all_offers:
        if offer.accelerator == "cpu":
            continue
        picked = cat.resolve(offer.provider, offer.accelerator, offer.count)
        priced = [o.usd_per_hour for o in [picked, *cat.alternatives(picked)] if o.usd_per_hour is not None]
        assert picked.usd_per_hour is None or picked.usd_per_hour == min(priced), offer
        assert picked not in cat.alternatives(picked)


# ----------------------------------------------------------------------------- refusals name the spec field
@pytest.mark.parametrize("provider, accelerator, count, reason", [
    ("azure", "A10G", 1, "azure has no A10G"),  # not on this provider
    ("aws", "A10G", 3, "aws offers A10G in counts of 1, 4 or 8 per machine, not 3"),  # count not offered
    ("gcp", "TPU-v5e", 3, "gcp offers TPU-v5e in counts of 1, 4 or 8 per machine, not 3"),  # no such TPU slice
    ("gcp", "h10", 1, "unknown accelerator 'h10' (did you mean H100"),  # unknown (a spec validated elsewhere)
])
def test_every_resolve_refusal_names_the_accelerator_field(cat: Catalog, provider: str, accelerator: str, count: int,
                                                           reason: str) -> None:
    with pytest.raises(CatalogError) as err:
        cat.resolve(provider, accelerator, count)
    assert err.value.message.startswith(f"resources.accelerator: {reason}"), err.value.message
    assert err.value.field == "resources.accelerator" and err.value.fix and err.value.exit_code == 2
    assert cat.resolve("aws", "A10G", 1, field=None).accelerator == "A10G"
    with pytest.raises(CatalogError) as bare:
        cat.resolve(provider, accelerator, count, field=None)
    assert bare.value.message.startswith(reason) and bare.value.field is None


def test_a_tpu_count_no_slice_has_lists_the_slices_not_more_nodes(cat: Catalog) -> None:
    """cloudtune runs one TPU slice on one host, so TPU-v5e:16 is not fixed by `nodes: 2` (which the gcp launcher
    refuses); a GPU count that whole machines make up still is."""
    with pytest.raises(CatalogError) as err:
        cat.resolve("gcp", "TPU-v5e", 16)
    assert err.value.fix == "ask for TPU-v5e:1 (a 1x1 slice), TPU-v5e:4 (a 2x2 slice) or TPU-v5e:8 (a 2x4 slice)"
    with pytest.raises(CatalogError) as err:
        cat.resolve("aws", "H100", 16)
    assert err.value.fix == "ask for H100:8, or use nodes: 2 with H100:8"


PROVIDER_SETTINGS = ('  azure: {subscription_id: "00000000-0000-0000-0000-000000000000", resource_group: rg, '
                     'workspace: ws}\n  gcp: {project: p, region: us-central1, bucket: my-bucket}\n'
                     '  aws: {role: "arn:aws:iam::123456789012:role/X", bucket: my-bucket, region: us-east-1}\n')


def _job(tmp_path: Path, resources: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(f'name: t\ncommand: "python -c pass"\nresources:\n{resources}providers:\n{PROVIDER_SETTINGS}')
    return path


@pytest.mark.parametrize("provider, accelerator, reason", [
    ("azure", "A10G:1", "azure has no A10G"),
    ("gcp", "A10G:1", "gcp has no A10G"),
    ("gcp", "H100:3", "gcp offers H100 in counts of 1, 2, 4 or 8 per machine, not 3"),
    ("gcp", "TPU-v5e:3", "gcp offers TPU-v5e in counts of 1, 4 or 8 per machine, not 3"),
    ("aws", "A10G:3", "aws offers A10G in counts of 1, 4 or 8 per machine, not 3"),
])
def test_a_dry_run_refusal_names_the_field_by_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            provider: str, accelerator: str, reason: str) -> None:
    """`--provider azure --dry-run` with A10G:1 once said "azure has no A10G" without the field: now the spec's file,
    line and field, as the spec's own errors, then the fix; exit 2."""
    from click.testing import CliRunner

    from cloudtune.cli import main

    monkeypatch.chdir(tmp_path)
    _job(tmp_path, f"  accelerator: {accelerator}\n")
    result = CliRunner().invoke(main, ["launch", "job.yaml", "--provider", provider, "--dry-run"],
                                env={"CLOUDTUNE_HOME": str(tmp_path / "home")})
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.output.startswith(f"error: job.yaml:4: resources.accelerator: {reason}\nTo fix: "), result.output


def test_the_kit_names_the_line_or_the_set_flag_and_the_instance_type_override(tmp_path: Path) -> None:
    from cloudtune.kit.cost import accelerator_offer, catalog_offer
    from cloudtune.spec import load_spec

    path = _job(tmp_path, "  disk_gb: 50\n  accelerator: A10G:1\n")
    assert accelerator_offer(load_spec(path), "aws").instance_type == "ml.g5.xlarge"
    for provider in ("gcp", "azure"):
        with pytest.raises(CatalogError) as err:
            accelerator_offer(load_spec(path), provider)
        assert err.value.message == f"{path}:5: resources.accelerator: {provider} has no A10G"
    with pytest.raises(CatalogError) as err:
        accelerator_offer(load_spec(path, ["resources.accelerator=A10G:2"]), "aws")
    assert err.value.message == (f"{path}: resources.accelerator: aws offers A10G in counts of 1, 4 or 8 per machine, "
                                 f"not 2 (from --set resources.accelerator=A10G:2)")
    path = _job(tmp_path, "  accelerator: T4:1\n  instance_type:\n    azure: Standard_Nope\n")
    with pytest.raises(CatalogError) as err:
        catalog_offer(load_spec(path), "azure", "VM size")
    assert err.value.message == (f"{path}:6: resources.instance_type.azure: 'Standard_Nope' is not in the catalog: "
                                 f"its accelerators are unknown")
    assert err.value.fix == "use a VM size from `cloudtune catalog --provider azure`, or drop the override"
