"""Reads a kubeconfig (``--kubeconfig`` / ``KUBECONFIG``) as the Rust controller (kube-rs) does:
the current context's cluster and user.

kubectl writes kubeconfigs in YAML, and the standard library has no YAML parser, so this module
has a small, strict one for the subset kubeconfigs use: block mappings and sequences (including
kubectl's ``- name: x`` items at their key's indentation), plain, single- and double-quoted
scalars, comments, the empty flow collections ``{}`` and ``[]`` (other flow collections only if
they are JSON), and a leading ``---``. A file that starts with ``{`` is read as JSON (JSON is a
valid kubeconfig). Anything else (anchors, aliases, tags, block scalars, multi-line plain
scalars, tabs, duplicate keys, several documents) is refused with :class:`KubeconfigError`
naming the file and line: a kubeconfig is never silently misread.

What is used, as kube-rs uses it: ``current-context`` -> the context's ``cluster`` and
``user``. Cluster: ``server``, ``certificate-authority`` or ``certificate-authority-data``,
``insecure-skip-tls-verify``. User: ``token`` (wins over ``tokenFile``, as in client-go),
``tokenFile``, ``client-certificate`` / ``client-certificate-data`` and ``client-key`` /
``client-key-data``. Relative paths are relative to the kubeconfig's folder. Several files
(``KUBECONFIG=a:b``) are merged as kubectl does: the first file to define a name or the
current context wins. Fields this controller cannot honour (``exec``, ``auth-provider``,
``username``/``password``, impersonation, ``proxy-url``, ``tls-server-name``) and unknown
fields are refused rather than ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple


class KubeconfigError(Exception):
    """The kubeconfig cannot be used; the message is one line naming the file."""


# ---------------------------------------------------------------------------------------------
# The YAML subset
# ---------------------------------------------------------------------------------------------

_INT = re.compile(r"[-+]?[0-9]+\Z")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z")
_NULLS = {"", "~", "null", "Null", "NULL"}
_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}
#: Characters that start YAML syntax this parser does not implement, when they begin a value.
_UNSUPPORTED_START = {"&": "anchors", "*": "aliases", "!": "tags", "|": "block scalars",
                      ">": "block scalars", "%": "directives", "@": "reserved characters",
                      "`": "reserved characters"}


class _YamlError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")


def _strip_comment(text: str, line: int) -> str:
    """Drops a ``#`` comment (at the start or after a space, outside quotes)."""
    quote = None
    i = 0
    while i < len(text):
        c = text[i]
        if quote == "'":
            if c == "'":
                if i + 1 < len(text) and text[i + 1] == "'":
                    i += 2
                    continue
                quote = None
        elif quote == '"':
            if c == "\\":
                i += 2
                continue
            if c == '"':
                quote = None
        elif c in "'\"" and (i == 0 or text[i - 1] in " :-[{,"):
            quote = c
        elif c == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
        i += 1
    if quote is not None:
        raise _YamlError(line, "unterminated quoted string (multi-line strings are not supported)")
    return text.rstrip()


def _scalar(text: str, line: int) -> Any:
    """One scalar or empty flow collection, as YAML 1.2's core schema reads it."""
    if text[:1] in _UNSUPPORTED_START:
        raise _YamlError(line, f"{_UNSUPPORTED_START[text[0]]} are not supported")
    if text.startswith('"'):
        try:
            value = json.loads(text)
        except ValueError:
            raise _YamlError(line, f"cannot read the double-quoted string {text}") from None
        if not isinstance(value, str):
            raise _YamlError(line, f"cannot read the double-quoted string {text}")
        return value
    if text.startswith("'"):
        if len(text) < 2 or not text.endswith("'") or "'" in text[1:-1].replace("''", ""):
            raise _YamlError(line, f"cannot read the single-quoted string {text}")
        return text[1:-1].replace("''", "'")
    if text.startswith(("{", "[")):
        try:
            return json.loads(text)
        except ValueError:
            raise _YamlError(line, f"flow collections other than JSON are not supported: {text}") from None
    if text in _NULLS:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    if ": " in text or text.endswith(":"):
        raise _YamlError(line, f"a mapping cannot start on the line of a value: {text}")
    return text


def _split_key(content: str, line: int) -> Optional[Tuple[str, str]]:
    """``key: value`` -> ``(key, value)``; ``None`` when the line is no mapping entry."""
    if content.startswith(('"', "'")):
        quote = content[0]
        end = 1
        while True:
            end = content.find(quote, end)
            if end < 0:
                raise _YamlError(line, f"unterminated quoted key: {content}")
            if quote == "'" and content[end + 1:end + 2] == "'":
                end += 2
                continue
            if quote == '"' and content[end - 1] == "\\":
                end += 1
                continue
            break
        key_text, rest = content[:end + 1], content[end + 1:]
        if not (rest == ":" or rest.startswith(": ")):
            return None
        return str(_scalar(key_text, line)), rest[1:].strip()
    m = re.match(r"([^\s#'\"{}\[\],&*!|>%@`][^:]*?|[^\s#'\"{}\[\],&*!|>%@`]):( |\Z)", content)
    if m is None:
        return None
    return m.group(1).strip(), content[m.end():].strip()


class _Yaml:
    def __init__(self, text: str) -> None:
        self.lines: List[Tuple[int, int, str]] = []  # (line number, indent, content)
        started = False
        for number, raw in enumerate(text.splitlines(), 1):
            stripped = raw.lstrip(" ")
            if stripped.startswith("\t") or (not stripped.strip() == "" and "\t" in raw[:len(raw) - len(stripped)]):
                raise _YamlError(number, "tabs are not allowed for indentation")
            content = _strip_comment(stripped, number)
            if not content:
                continue
            if content in ("---", "...") or content.startswith(("--- ", "%")):
                if content == "---" and not started and not self.lines:
                    started = True
                    continue
                raise _YamlError(number, "only one YAML document is supported")
            self.lines.append((number, len(raw) - len(stripped), content))

    def parse(self) -> Any:
        if not self.lines:
            return None
        value, end = self._block(0, self.lines[0][1])
        if end != len(self.lines):
            number = self.lines[end][0]
            raise _YamlError(number, "unexpected indentation")
        return value

    def _block(self, i: int, indent: int) -> Tuple[Any, int]:
        number, ind, content = self.lines[i]
        if ind != indent:
            raise _YamlError(number, "unexpected indentation")
        if content == "-" or content.startswith("- "):
            return self._sequence(i, indent)
        if _split_key(content, number) is not None:
            return self._mapping(i, indent)
        # A lone scalar (a document that is one value, or a value on its own line).
        if i + 1 < len(self.lines) and self.lines[i + 1][1] > indent:
            raise _YamlError(self.lines[i + 1][0], "multi-line plain scalars are not supported")
        return _scalar(content, number), i + 1

    def _nested(self, i: int, indent: int, number: int, seq_at_same_indent: bool) -> Tuple[Any, int]:
        """The value of a key or dash with nothing after it: a deeper block, or null."""
        if i < len(self.lines):
            _, ind, content = self.lines[i]
            if ind > indent:
                return self._block(i, ind)
            if seq_at_same_indent and ind == indent and (content == "-" or content.startswith("- ")):
                return self._sequence(i, indent)
        return None, i

    def _mapping(self, i: int, indent: int) -> Tuple[Dict[str, Any], int]:
        out: Dict[str, Any] = {}
        while i < len(self.lines):
            number, ind, content = self.lines[i]
            if ind < indent:
                break
            if ind > indent:
                raise _YamlError(number, "unexpected indentation")
            kv = _split_key(content, number)
            if kv is None:
                raise _YamlError(number, f"expected `key: value`, found {content}")
            key, rest = kv
            if key in out:
                raise _YamlError(number, f"duplicate key {key!r}")
            if rest:
                out[key] = _scalar(rest, number)
                i += 1
                if i < len(self.lines) and self.lines[i][1] > indent:
                    raise _YamlError(self.lines[i][0], "multi-line plain scalars are not supported")
            else:
                out[key], i = self._nested(i + 1, indent, number, seq_at_same_indent=True)
        return out, i

    def _sequence(self, i: int, indent: int) -> Tuple[List[Any], int]:
        out: List[Any] = []
        while i < len(self.lines):
            number, ind, content = self.lines[i]
            if ind < indent or not (content == "-" or content.startswith("- ")):
                if ind > indent:
                    raise _YamlError(number, "unexpected indentation")
                break
            if ind > indent:
                raise _YamlError(number, "unexpected indentation")
            rest = content[1:].lstrip(" ")
            if not rest:
                value, i = self._nested(i + 1, indent, number, seq_at_same_indent=False)
                out.append(value)
                continue
            # "- key: v" or "- - x": the rest is a block at its own column.
            column = indent + (len(content) - len(rest))
            self.lines[i] = (number, column, rest)
            value, i = self._block(i, column)
            out.append(value)
        return out, i


def parse_yaml(text: str) -> Any:
    """Parses the YAML subset (or JSON); raises ``ValueError`` with the line on anything else."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text)
        except ValueError as e:
            raise ValueError(f"invalid JSON: {e}") from None
    try:
        return _Yaml(text).parse()
    except _YamlError as e:
        raise ValueError(str(e)) from None


# ---------------------------------------------------------------------------------------------
# The kubeconfig
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ApiAccess:
    """How to reach and authenticate to the API server (from a kubeconfig, flags or the pod)."""

    server: str
    token: Optional[str] = None
    token_file: Optional[str] = None
    ca_file: Optional[str] = None
    #: PEM text of ``certificate-authority-data``.
    ca_data: Optional[str] = None
    insecure_skip_tls_verify: bool = False
    client_cert_file: Optional[str] = None
    client_key_file: Optional[str] = None
    client_cert_data: Optional[bytes] = None
    client_key_data: Optional[bytes] = None


_CLUSTER_KEYS = {"server", "certificate-authority", "certificate-authority-data", "insecure-skip-tls-verify",
                 "extensions", "disable-compression"}
_CLUSTER_UNSUPPORTED = {"proxy-url", "tls-server-name"}
_USER_KEYS = {"token", "tokenFile", "client-certificate", "client-certificate-data", "client-key",
              "client-key-data", "extensions"}
_USER_UNSUPPORTED = {"exec", "auth-provider", "username", "password", "as", "as-uid", "as-groups",
                     "as-user-extra"}


def _read(path: str) -> Dict[str, Any]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read(4 * 1024 * 1024)
    except (OSError, UnicodeDecodeError) as e:
        raise KubeconfigError(f"cannot read kubeconfig {path}: {e}") from None
    try:
        doc = parse_yaml(text)
    except ValueError as e:
        raise KubeconfigError(f"cannot read kubeconfig {path}: {e}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise KubeconfigError(f"cannot read kubeconfig {path}: not a mapping")
    return doc


def _named(doc: Dict[str, Any], section: str, path: str) -> List[Tuple[str, Any]]:
    items = doc.get(section)
    if items is None:
        return []
    if not isinstance(items, list):
        raise KubeconfigError(f"kubeconfig {path}: {section} is not a list")
    out = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise KubeconfigError(f"kubeconfig {path}: an entry of {section} has no name")
        out.append((item["name"], item))
    return out


def _string(obj: Dict[str, Any], key: str, where: str) -> Optional[str]:
    v = obj.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise KubeconfigError(f"{where}: {key} is not a string")
    return v


def _data(obj: Dict[str, Any], key: str, where: str) -> Optional[bytes]:
    v = _string(obj, key, where)
    if v is None:
        return None
    try:
        return base64.b64decode("".join(v.split()), validate=True)
    except (binascii.Error, ValueError):
        raise KubeconfigError(f"{where}: {key} is not base64") from None


def _path(obj: Dict[str, Any], key: str, where: str, base: str) -> Optional[str]:
    v = _string(obj, key, where)
    if not v:
        return None
    return v if os.path.isabs(v) else os.path.join(base, v)


def load(paths: str) -> ApiAccess:
    """The API access of the current context of the kubeconfig file(s) ``paths``
    (``os.pathsep``-separated, as ``KUBECONFIG``). Raises :class:`KubeconfigError`."""
    files = [p for p in paths.split(os.pathsep) if p]
    if not files:
        raise KubeconfigError("the kubeconfig path is empty")
    current: Optional[str] = None
    # name -> (entry, file it came from); the first file to define a name wins.
    entries: Dict[str, Dict[str, Tuple[Dict[str, Any], str]]] = {"clusters": {}, "users": {}, "contexts": {}}
    for path in files:
        doc = _read(path)
        if current is None and doc.get("current-context"):
            if not isinstance(doc["current-context"], str):
                raise KubeconfigError(f"kubeconfig {path}: current-context is not a string")
            current = doc["current-context"]
        for section in entries:
            for name, item in _named(doc, section, path):
                entries[section].setdefault(name, (item, path))
    where = os.pathsep.join(files)
    if current is None:
        raise KubeconfigError(f"kubeconfig {where}: no current-context")
    if current not in entries["contexts"]:
        raise KubeconfigError(f"kubeconfig {where}: the current context {current!r} is not defined")
    ctx_item, ctx_path = entries["contexts"][current]
    context = ctx_item.get("context")
    if not isinstance(context, dict):
        raise KubeconfigError(f"kubeconfig {ctx_path}: context {current!r} has no context")
    cluster_name = _string(context, "cluster", f"kubeconfig {ctx_path}: context {current!r}")
    if not cluster_name or cluster_name not in entries["clusters"]:
        raise KubeconfigError(f"kubeconfig {where}: the cluster {cluster_name!r} of context {current!r} is not defined")
    cl_item, cl_path = entries["clusters"][cluster_name]
    cluster = cl_item.get("cluster")
    cwhere = f"kubeconfig {cl_path}: cluster {cluster_name!r}"
    if not isinstance(cluster, dict):
        raise KubeconfigError(f"{cwhere}: no cluster")
    _check_keys(cluster, _CLUSTER_KEYS, _CLUSTER_UNSUPPORTED, cwhere)
    server = _string(cluster, "server", cwhere)
    if not server:
        raise KubeconfigError(f"{cwhere}: no server")
    insecure = cluster.get("insecure-skip-tls-verify", False)
    if not isinstance(insecure, bool):
        raise KubeconfigError(f"{cwhere}: insecure-skip-tls-verify is not true or false")
    base = os.path.dirname(os.path.abspath(cl_path))
    ca_file = _path(cluster, "certificate-authority", cwhere, base)
    ca_bytes = _data(cluster, "certificate-authority-data", cwhere)
    if ca_file and ca_bytes is not None:
        raise KubeconfigError(f"{cwhere}: both certificate-authority and certificate-authority-data")
    if insecure and (ca_file or ca_bytes is not None):
        # client-go refuses this combination too.
        raise KubeconfigError(f"{cwhere}: a CA together with insecure-skip-tls-verify")
    ca_data = None
    if ca_bytes is not None:
        try:
            ca_data = ca_bytes.decode("ascii")
        except UnicodeDecodeError:
            raise KubeconfigError(f"{cwhere}: certificate-authority-data is not PEM") from None

    access: Dict[str, Any] = {}
    user_name = _string(context, "user", f"kubeconfig {ctx_path}: context {current!r}")
    if user_name:
        if user_name not in entries["users"]:
            raise KubeconfigError(f"kubeconfig {where}: the user {user_name!r} of context {current!r} is not defined")
        u_item, u_path = entries["users"][user_name]
        user = u_item.get("user") or {}
        uwhere = f"kubeconfig {u_path}: user {user_name!r}"
        if not isinstance(user, dict):
            raise KubeconfigError(f"{uwhere}: user is not a mapping")
        _check_keys(user, _USER_KEYS, _USER_UNSUPPORTED, uwhere)
        ubase = os.path.dirname(os.path.abspath(u_path))
        access["token"] = _string(user, "token", uwhere) or None
        if access["token"] is None:
            access["token_file"] = _path(user, "tokenFile", uwhere, ubase)
        cert_file = _path(user, "client-certificate", uwhere, ubase)
        key_file = _path(user, "client-key", uwhere, ubase)
        cert_data = _data(user, "client-certificate-data", uwhere)
        key_data = _data(user, "client-key-data", uwhere)
        if cert_file and cert_data is not None:
            raise KubeconfigError(f"{uwhere}: both client-certificate and client-certificate-data")
        if key_file and key_data is not None:
            raise KubeconfigError(f"{uwhere}: both client-key and client-key-data")
        has_cert = bool(cert_file) or cert_data is not None
        has_key = bool(key_file) or key_data is not None
        if has_cert != has_key:
            raise KubeconfigError(f"{uwhere}: a client certificate needs its key, and a key its certificate")
        access.update(client_cert_file=cert_file, client_key_file=key_file, client_cert_data=cert_data,
                      client_key_data=key_data)
    return ApiAccess(server=server, ca_file=ca_file, ca_data=ca_data, insecure_skip_tls_verify=insecure, **access)


def _check_keys(obj: Dict[str, Any], known: set, unsupported: set, where: str) -> None:
    for key in obj:
        if key in unsupported:
            raise KubeconfigError(f"{where}: {key} is not supported by this controller")
        if key not in known:
            raise KubeconfigError(f"{where}: unknown field {key!r}")
