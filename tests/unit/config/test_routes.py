"""routes.yaml validation: every problem is refused with its YAML path."""

from __future__ import annotations

import textwrap

import pytest

from proxy.config import yamlload
from proxy.config.routes import RoutesFile


def parse(text: str) -> RoutesFile:
    doc = yamlload.parse_yaml(textwrap.dedent(text), "routes.yaml")
    return yamlload.validate(RoutesFile, doc, "routes.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(yamlload.ConfigError) as info:
        parse(text)
    return info.value.problems


HEAD = """\
models:
  a: {path: a.onnx}
  b: {path: b.onnx}
routes:
"""


def route(experiments: str, model: str = "a") -> str:
    return (
        HEAD
        + f"  - {{name: r, match: {{path: /feed}}, model: {model},\n"
        + f"     experiments: {experiments}}}\n"
    )


def test_full_example_parses() -> None:
    spec = parse(
        route(
            """[
            {name: hdr, when: {header: {X-Beta: "true"}}, model: b},
            {when: {cookie: {beta: "1"}}, model: b},
            {when: {query: {variant: b}}, model: b},
            {when: {percent: 12.5, salt: spring}, model: b},
            {when: {header: {X-A: "1"}, cookie: {c: "2"}, query: {q: "3"}, percent: 50},
             model: none}
            ]"""
        )
    )
    when = spec.routes[0].experiments[4].when
    assert (when.header, when.cookie, when.query, when.percent) == (
        {"X-A": "1"},
        {"c": "2"},
        {"q": "3"},
        50.0,
    )


def test_yaml_scalars_mean_their_text() -> None:
    # `X-Beta: true` in YAML is a bool; the header it means carries the text "true".
    spec = parse(route("[{when: {header: {X-Beta: true}, cookie: {beta: 1}}, model: b}]"))
    when = spec.routes[0].experiments[0].when
    assert when.header == {"X-Beta": "true"} and when.cookie == {"beta": "1"}


@pytest.mark.parametrize(
    ("experiments", "expected"),
    [
        (
            "[{when: {percent: 150}, model: b}]",
            "routes[0].experiments[0].when.percent: must be 0..100",
        ),
        (
            "[{when: {header: {X: '1'}}, model: b}, {when: {percent: -1}, model: b}]",
            "routes[0].experiments[1].when.percent: must be 0..100",
        ),
        (
            "[{when: {header: {X: '1'}}, model: c}]",
            "routes[0].experiments[0].model: unknown model 'c' (known: ['a', 'b'])",
        ),
        (
            "[{when: {header: {X: '1'}, salt: s}, model: b}]",
            "routes[0].experiments[0].when: salt goes with percent",
        ),
        (
            "[{when: {}, model: b}]",
            "routes[0].experiments[0].when: needs at least one of header, cookie, query, percent",
        ),
        (
            "[{when: {headers: {X: '1'}}, model: b}]",
            "routes[0].experiments[0].when.headers: unknown key (did you mean 'header'?)",
        ),
        (
            "[{name: default, when: {percent: 5}, model: b}]",
            "routes[0].experiments[0].name: arm name 'default' is already used in this "
            "route (reserved for the route's model)",
        ),
        (
            "[{when: {percent: 5}, model: b}, {name: exp0, when: {percent: 9}, model: b}]",
            "routes[0].experiments[1].name: arm name 'exp0' is already used in this route",
        ),
        (
            "[{when: {header: {X: 1.5}}, model: b}]",
            "routes[0].experiments[0].when.header.X: Input should be a valid string",
        ),
    ],
)
def test_experiment_problems_name_their_path(experiments: str, expected: str) -> None:
    assert expected in problems(route(experiments))


def test_unknown_default_model() -> None:
    assert problems(route("[]", model="zz")) == [
        "routes[0].model: unknown model 'zz' (known: ['a', 'b'])"
    ]


def test_control_arm_needs_no_registry_entry() -> None:
    spec = parse(route("[{when: {percent: 50}, model: none}]", model="none"))
    assert spec.routes[0].model == "none"


def test_none_is_reserved() -> None:
    assert problems("models: {none: {path: x.onnx}}\n") == [
        "models.none: reserved for the control arm"
    ]


def test_sha256_must_be_hex() -> None:
    out = problems("models: {a: {path: a.onnx, sha256: abc}}\n")
    assert out[0].startswith("models.a.sha256: must be 64 hex digits")


def test_unquoted_digest_of_digits_is_refused() -> None:
    # YAML reads it as a number (leading zeros gone); say so rather than "not hex".
    out = problems("models: {a: {path: a.onnx, sha256: 0123}}\n")
    assert out == ["models.a.sha256: must be a quoted string (YAML read a number)"]


def test_yaml_syntax_error_names_the_line() -> None:
    out = problems(HEAD + "  - {name: r, match: {path: /feed}, model: a\n")
    assert len(out) == 1 and out[0].startswith("YAML syntax error: line ")


def test_several_problems_are_all_reported() -> None:
    out = problems(
        HEAD
        + "  - {name: r, match: {path: /f}, model: x}\n"
        + "  - {name: r, match: {path: /g}, model: a,\n"
        + "     experiments: [{when: {percent: 1}, model: y}]}\n"
    )
    assert out == [
        "routes[0].model: unknown model 'x' (known: ['a', 'b'])",
        "routes[1].name: duplicate route name 'r'",
        "routes[1].experiments[0].model: unknown model 'y' (known: ['a', 'b'])",
    ]


@pytest.mark.parametrize(
    ("experiment", "problem"),
    [
        ("{when: {percent: 5}, model: m, bandit: {models: [m, n]}}", "exactly one of"),
        ("{when: {percent: 5}, bandit: {models: [m]}}", "at least two different"),
        ("{when: {percent: 5}, bandit: {models: [m, m]}}", "at least two different"),
        ("{when: {percent: 5}, bandit: {models: [m, n], min_share: 0.6}}", "bandit.min_share"),
        ("{when: {percent: 5}, bandit: {models: [m, zz]}}", "bandit.models[1]: unknown model"),
        ("{when: {percent: 5}, model: m, guardrails: {ctr: 10%}}", "guardrails.ctr"),
        ("{when: {percent: 5}, model: m, guardrails: {}}", "give at least one"),
    ],
)
def test_bandits_and_guardrails_are_checked_with_their_path(experiment: str, problem: str) -> None:
    text = (
        "models: {m: {path: m.onnx}, n: {path: n.onnx}}\n"
        "routes:\n"
        f"  - {{name: r, match: {{path: /f}}, model: m, experiments: [{experiment}]}}\n"
    )
    found = problems(text)
    assert any(problem in p and p.startswith("routes[0].experiments[0]") for p in found), found


SIX = "models: {" + ", ".join(f"m{k}: {{path: m{k}.onnx}}" for k in range(7)) + "}\n"


def interleaved(models: str) -> str:
    return (
        SIX + "routes:\n"
        "  - {name: r, match: {path: /f}, model: m0,\n"
        f"     experiments: [{{when: {{percent: 5}}, interleave: {models}}}]}}\n"
    )


@pytest.mark.parametrize(
    ("models", "problem"),
    [
        ("[m1]", "interleave: 2 to 6 models, not 1"),
        ("[m0, m1, m2, m3, m4, m5, m6]", "interleave: 2 to 6 models, not 7"),
        ("[m1, m1]", "interleave: two different models (not 'none')"),
        ("[m1, none]", "interleave: two different models (not 'none')"),
        ("[m1, m2, m1]", "interleave: 3 different models (not 'none')"),
        ("[m1, m2, none]", "interleave: 3 different models (not 'none')"),
        ("[m1, m2, zz]", "experiments[0].interleave[2]: unknown model 'zz'"),
    ],
)
def test_interleave_takes_two_to_six_different_models(models: str, problem: str) -> None:
    found = problems(interleaved(models))
    assert any(problem in p and p.startswith("routes[0].experiments[0]") for p in found), found


def test_three_to_six_models_interleave_in_their_order() -> None:
    for k in (2, 3, 6):
        names = [f"m{i}" for i in range(1, k + 1)]
        spec = parse(interleaved("[" + ", ".join(names) + "]"))
        exp = spec.routes[0].experiments[0]
        assert exp.interleave == tuple(names) and exp.models == tuple(names)
        assert exp.label == "+".join(names)
