"""Load a fleet file from YAML and locate every problem at ``file:line:column``.

The YAML is composed into nodes first (which keep their marks), then validated by pydantic; each
pydantic error location is walked back through the node tree to the nearest node that exists, so an
error on a missing key points at its parent mapping and an error on a bad value points at the value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from raygent.core.config import ConfigIssue, Fleet, cross_check
from raygent.core.errors import ConfigError

__all__ = ["FleetFileError", "LocatedIssue", "check_fleet_file", "load_fleet"]

MAX_FLEET_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class LocatedIssue:
    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class FleetFileError(ConfigError):
    """The fleet file is unreadable or invalid; ``issues`` lists every problem found."""

    def __init__(self, detail: str, *, issues: list[LocatedIssue] | None = None, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.issues = list(issues or [])

    def __reduce__(self) -> tuple[Any, ...]:
        fields = (self.detail, self.issues, self.retryable, self.retry_after_s, self.extra)
        return (_rebuild_fleet_error, fields)


def _rebuild_fleet_error(
    detail: str,
    issues: list[LocatedIssue],
    retryable: bool = False,
    retry_after_s: float | None = None,
    extra: dict[str, Any] | None = None,
) -> FleetFileError:
    return FleetFileError(
        detail, issues=issues, retryable=retryable, retry_after_s=retry_after_s, extra=extra
    )


def _key(node: yaml.Node) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else "?"


def _kind(node: yaml.MappingNode) -> str | None:
    return next((_key(v) for k, v in node.value if _key(k) == "kind"), None)


def _find(
    root: yaml.Node, loc: tuple[str | int, ...], *, at_key: bool = False
) -> tuple[yaml.Node, bool, tuple[str | int, ...]]:
    """The node at ``loc``, or the deepest existing ancestor (second item False then), and the key path
    as the file spells it (without the tags discriminated unions add). With ``at_key`` the last part's
    key node is returned instead of its value (an unknown key is reported where the key is written)."""
    node = root
    path: list[str | int] = []
    for index, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if _key(key_node) == str(part):
                    node = key_node if at_key and index == len(loc) - 1 else value_node
                    break
            else:
                # A discriminated union adds its tag to the location ('python'): skip such parts. A
                # missing key also ends up here; the parent mapping is then the nearest node.
                if _kind(node) != str(part):
                    path.append(part)
                continue
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
        else:
            return node, False, (*path, *loc[index:])
        path.append(part)
    return node, True, tuple(path)


def _duplicate_keys(node: yaml.Node, file: str) -> list[LocatedIssue]:
    issues: list[LocatedIssue] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = _key(key_node)
            if key in seen:
                mark = key_node.start_mark
                issues.append(LocatedIssue(file, mark.line + 1, mark.column + 1, f"duplicate key {key!r}"))
            seen.add(key)
            issues.extend(_duplicate_keys(value_node, file))
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            issues.extend(_duplicate_keys(item, file))
    return issues


def _plain(message: str) -> str:
    message = message.removeprefix("Value error, ")
    return message[:1].lower() + message[1:] if message else message


def _locate(root: yaml.Node, file: str, issue: ConfigIssue) -> LocatedIssue:
    node, exact, path = _find(root, issue.loc, at_key=issue.message == _UNKNOWN_KEY)
    mark = node.start_mark
    where = ".".join(str(p) for p in path) or "the file"
    message = f"{issue.message} (at {where})" if not exact and issue.loc else f"{where}: {issue.message}"
    return LocatedIssue(file, mark.line + 1, mark.column + 1, message)


_UNKNOWN_KEY = "unknown key (not allowed here; check the spelling)"


def _pydantic_issues(exc: ValidationError) -> list[ConfigIssue]:
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
        msg = _plain(err["msg"])
        if err["type"] == "extra_forbidden":
            msg = _UNKNOWN_KEY
        elif err["type"] == "missing":
            msg = "required key is missing"
        out.append(ConfigIssue(loc=loc, message=msg))
    return out


def check_fleet_file(
    path: str | Path, *, state_dir: str | Path | None = None
) -> tuple[Fleet | None, list[LocatedIssue]]:
    """Parse and validate; returns the fleet (None if invalid) and every issue found.

    ``state_dir`` (else the ``RAYGENT_STATE_DIR`` environment variable, else ``.raygent`` beside the
    file) is where the store and other state files go.
    """
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        return None, [LocatedIssue(file, 0, 0, f"cannot read the file: {exc.strerror or exc}")]
    if len(raw) > MAX_FLEET_BYTES:
        return None, [LocatedIssue(file, 0, 0, f"file is larger than {MAX_FLEET_BYTES} bytes")]
    try:
        text = raw.decode("utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except UnicodeDecodeError:
        return None, [LocatedIssue(file, 0, 0, "file is not UTF-8 text")]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        return None, [LocatedIssue(file, line, col, f"not valid YAML: {exc.problem}")]
    except yaml.YAMLError as exc:
        return None, [LocatedIssue(file, 0, 0, f"not valid YAML: {exc}")]
    if root is None or not isinstance(data, dict):
        return None, [
            LocatedIssue(file, 1, 1, "the fleet file must be a YAML mapping (name, models, agents, …)")
        ]
    issues = _duplicate_keys(root, file)
    for key_node, _ in root.value if isinstance(root, yaml.MappingNode) else []:
        if _key(key_node) in ("base_dir", "state_dir"):
            # Set by the loader below; accepting them from the file would silently ignore the value.
            mark = key_node.start_mark
            issues.append(
                LocatedIssue(
                    file,
                    mark.line + 1,
                    mark.column + 1,
                    f"{_key(key_node)}: unknown key "
                    "(set by the loader: use the state_dir argument or RAYGENT_STATE_DIR)",
                )
            )
    data["base_dir"] = str(Path(path).resolve().parent)
    state = state_dir or os.environ.get("RAYGENT_STATE_DIR")
    data["state_dir"] = str(Path(state).resolve()) if state else ""
    try:
        fleet = Fleet.model_validate(data)
    except ValidationError as exc:
        issues.extend(_locate(root, file, i) for i in _pydantic_issues(exc))
        return None, issues
    issues.extend(_locate(root, file, i) for i in cross_check(fleet))
    return (None if issues else fleet), issues


def load_fleet(path: str | Path, *, state_dir: str | Path | None = None) -> Fleet:
    """Load a valid fleet or raise :class:`FleetFileError` listing every located issue."""
    fleet, issues = check_fleet_file(path, state_dir=state_dir)
    if fleet is None:
        count = len(issues)
        first = str(issues[0]) if issues else str(path)
        raise FleetFileError(f"{count} problem(s) in the fleet file; first: {first}", issues=issues)
    return fleet
