"""Checks of deploy/: the Kubernetes manifests, the systemd units, the container build
file and the Burrow configuration.

kubeconform cannot be installed from the registries this project reaches, so this is a
small schema-aware checker of its own: a table of the fields each kind we use may have
(and must have), cross-references (selectors, probe ports, volumes, ConfigMaps), and
what matters to sohoa itself: every SOHOA__SECTION__KEY and every TOML key is a real key
of config/default.toml, every sohoa flag is one `sohoa <sub> --help` lists, secrets are
referenced and never written down, and the stop timeouts outlast the drain deadline.

The kustomizations are rendered by a minimal kustomize (resources, configMapGenerator,
strategic-merge patches, `$patch: delete` of a whole object, images, namespace): enough
for these files, and it refuses any feature it does not implement. Where kubectl is installed, its own `kubectl kustomize`
output is checked too and compared with ours.

Every checker returns a list of problems (strings) instead of asserting, so the negative
tests at the end can feed it broken input and see it complain.
"""

import configparser
import copy
import json
import math
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import tomllib

import pytest
import yaml
from conftest import events_table

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
BURROW = DEPLOY / "burrow" / "burrow.toml"
CONTAINERFILE = DEPLOY / "Containerfile"
# Another engineer's directories, with their own tests.
NOT_OURS = (DEPLOY / "grafana", DEPLOY / "prometheus")

DEFAULTS = tomllib.loads((ROOT / "config" / "default.toml").read_text())
KUSTOMIZE_DIRS = [K8S / "base", K8S / "overlays" / "dev", K8S / "overlays" / "prod",
                  K8S / "overlays" / "continuous"]


def ours(path):
    return not any(path.is_relative_to(d) for d in NOT_OURS)


def rel(path):
    path = pathlib.Path(path)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def dig(obj, *keys):
    """obj[k0][k1]..., or None when any step is missing or of the wrong type."""
    for k in keys:
        if isinstance(k, int):
            if not isinstance(obj, list) or k >= len(obj):
                return None
        elif not isinstance(obj, dict):
            return None
        obj = obj[k] if isinstance(k, int) else obj.get(k)
    return obj


# ---------------------------------------------------------------------------------------
# sohoa's configuration keys (config/default.toml) and environment variables
# ---------------------------------------------------------------------------------------

# Tables whose keys are free (librdkafka properties, object_store options); values are strings.
FREEFORM_TABLES = {("kafka", "properties"), ("storage", "options")}
# librdkafka properties sohoa manages itself (Config::validate refuses them).
MANAGED_PROPERTIES = {"enable.auto.commit", "group.id", "bootstrap.servers"}
# Names that look like secrets: their values come from Secrets, never from files.
SECRET_ENV = re.compile(r"KEY|PASSWORD|SECRET|TOKEN|CREDENTIAL|SASL_USERNAME", re.I)
SECRET_PROPERTY = re.compile(r"password|secret|token|sasl\.username|access_key|private_key|key\.pem", re.I)
# The placeholder the documentation uses for "any key".
DOC_PLACEHOLDERS = {"SOHOA__SECTION__KEY"}


def config_key_error(path):
    """None if the dotted key `path` (a tuple of lower-case parts) can be set, else why not."""
    dotted = ".".join(path)
    node, walked = DEFAULTS, ()
    for i, part in enumerate(path):
        if walked in FREEFORM_TABLES:
            if i == len(path) - 1:
                return None
            return f"{dotted}: [{'.'.join(walked)}] holds plain string values, not tables"
        if not isinstance(node, dict):
            return f"{dotted}: {'.'.join(walked)} is a value, not a table"
        if part not in node:
            where = ".".join(walked) or "the top level"
            return f"unknown configuration key {dotted}: no `{part}` in {where} of config/default.toml"
        node, walked = node[part], walked + (part,)
    if walked in FREEFORM_TABLES or isinstance(node, dict):
        return f"{dotted} is a table, not a key"
    if isinstance(node, list) and node and isinstance(node[0], dict):
        return f"{dotted} is an array of tables: set it in the TOML file, not in the environment"
    return None


def env_name_error(name):
    """None if `name` is a variable sohoa reads (or not sohoa's at all), else the problem."""
    if name in DOC_PLACEHOLDERS:
        return None
    if name.startswith("SOHOA__"):
        parts = name[len("SOHOA__"):].split("__")
        if not all(re.fullmatch(r"[A-Z0-9_]*[A-Z0-9]", p) for p in parts):
            return f"{name}: expected SOHOA__SECTION__KEY in upper case, parts separated by __"
        error = config_key_error(tuple(p.lower() for p in parts))
        return f"{name}: {error}" if error else None
    if name == "SOHOA_PSEUDONYM_KEY":
        return None
    if name.startswith("SOHOA_KAFKA_PROP_"):
        suffix = name[len("SOHOA_KAFKA_PROP_"):]
        if not re.fullmatch(r"[A-Z0-9]+(_[A-Z0-9]+)*", suffix):
            return f"{name}: expected SOHOA_KAFKA_PROP_<NAME> with the property's dots as _"
        prop = suffix.lower().replace("_", ".")
        if prop in MANAGED_PROPERTIES:
            return f"{name}: {prop} is managed by sohoa and cannot be overridden"
        return None
    if name.startswith("SOHOA"):
        return (f"{name} is not a variable sohoa reads (SOHOA__SECTION__KEY, SOHOA_PSEUDONYM_KEY "
                "or SOHOA_KAFKA_PROP_<NAME>)")
    return None


def _type_name(value):
    return type(value).__name__


def _same_type(default, value):
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, list):
        return isinstance(value, list) and all(
            not default or _same_type(default[0], v) for v in value)
    return isinstance(value, type(default))


def toml_key_errors(doc, where, node=DEFAULTS, path=()):
    """Every key of a sohoa TOML file must exist in config/default.toml, with its type."""
    errors = []
    for key, value in doc.items():
        p = path + (key,)
        dotted = ".".join(p)
        if path in FREEFORM_TABLES:
            if not isinstance(value, str):
                errors.append(f"{where}: {dotted}: values of [{'.'.join(path)}] are strings")
            if SECRET_PROPERTY.search(key):
                errors.append(f"{where}: {dotted} looks like a secret: set it in the environment "
                              "from a Secret (SOHOA_KAFKA_PROP_*, AWS_*), not in a file")
            continue
        if key not in node:
            where_in = ".".join(path) or "the top level"
            errors.append(f"{where}: unknown configuration key {dotted} (no `{key}` in "
                          f"{where_in} of config/default.toml)")
            continue
        default = node[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                errors.append(f"{where}: {dotted} must be a table, not {_type_name(value)}")
            else:
                errors += toml_key_errors(value, where, default, p)
        elif isinstance(default, list) and default and isinstance(default[0], dict):
            allowed = {k: v for item in default for k, v in item.items()}
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                errors.append(f"{where}: {dotted} must be an array of tables ([[{dotted}]])")
                continue
            for i, item in enumerate(value):
                errors += toml_key_errors(item, where, allowed, p + (str(i),))
        elif not _same_type(default, value):
            errors.append(f"{where}: {dotted} must be {_type_name(default)}, not {_type_name(value)}")
    return errors


def parse_toml(text, where):
    """(document, problems): a TOML text that does not parse is a problem, not a crash."""
    try:
        return tomllib.loads(text), []
    except tomllib.TOMLDecodeError as e:
        return {}, [f"{where}: not valid TOML: {e}"]


def parse_env_value(value):
    """As config-rs' try_parsing: booleans and numbers become typed."""
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def effective_config(toml_docs=(), env=None):
    """Defaults, then TOML files, then SOHOA__ variables, as sohoa merges them."""
    cfg = copy.deepcopy(DEFAULTS)

    def merge(dst, src):
        for k, v in src.items():
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                merge(dst[k], v)
            else:
                dst[k] = copy.deepcopy(v)

    for doc in toml_docs:
        merge(cfg, doc)
    for name, value in (env or {}).items():
        if name.startswith("SOHOA__") and env_name_error(name) is None and name not in DOC_PLACEHOLDERS:
            parts = [p.lower() for p in name[len("SOHOA__"):].split("__")]
            node = cfg
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = parse_env_value(value)
    return cfg


def drain_errors(cfg, stop_seconds, where):
    """The stop timeout must outlast the drain, and the drain the session timeout rule."""
    drain = cfg["shutdown"]["drain_deadline_ms"]
    errors = []
    if not stop_seconds * 1000 > drain:
        errors.append(f"{where}: stop timeout {stop_seconds:g} s is not longer than "
                      f"shutdown.drain_deadline_ms ({drain} ms): SIGKILL would cut the drain short")
    if not drain < cfg["kafka"]["session_timeout_ms"]:
        errors.append(f"{where}: shutdown.drain_deadline_ms ({drain}) must be shorter than "
                      f"kafka.session_timeout_ms ({cfg['kafka']['session_timeout_ms']})")
    return errors


# ---------------------------------------------------------------------------------------
# The sohoa command line: subcommands and flags, from the binary's own help
# ---------------------------------------------------------------------------------------

def sohoa_bin():
    return os.environ.get("SOHOA_BIN") or str(ROOT / "target" / "debug" / "sohoa")


_HELP = {}


def sohoa_help(sub=None):
    """`sohoa --help` or `sohoa <sub> --help`, cached."""
    if sub not in _HELP:
        cmd = [sohoa_bin()] + ([sub] if sub else []) + ["--help"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        _HELP[sub] = out.stdout if out.returncode == 0 else None
    return _HELP[sub]


def help_commands(text):
    """The subcommands a --help text lists."""
    section = text.split("Commands:", 1)[-1].split("Options:", 1)[0]
    return {m.group(1) for m in re.finditer(r"(?m)^  ([a-z][a-z0-9-]*)\s", section)} - {"help"}


def command_errors(argv, where, help_fn=sohoa_help):
    """argv after the sohoa binary: a real subcommand, and flags its --help lists."""
    global_help = help_fn(None)
    sub, i = None, 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--config":
            i += 2
            continue
        if tok.startswith("--config="):
            i += 1
            continue
        if tok.startswith("-"):
            return [f"{where}: `{tok}` before the subcommand is not a global flag of sohoa"]
        sub = tok
        break
    if sub is None:
        return [f"{where}: no sohoa subcommand in {argv}"]
    commands = help_commands(global_help)
    if sub not in commands:
        return [f"{where}: `{sub}` is not a sohoa subcommand ({', '.join(sorted(commands))})"]
    text = help_fn(sub)
    errors = []
    for tok in argv[i + 1:]:
        if tok.startswith("--"):
            flag = tok.split("=", 1)[0]
            if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text):
                errors.append(f"{where}: `sohoa {sub}` has no flag {flag} (see `sohoa {sub} --help`)")
    return errors


def sohoa_subcommand(argv):
    it = iter(argv)
    for tok in it:
        if tok == "--config":
            next(it, None)
        elif not tok.startswith("-"):
            return tok
    return None


def flag_value(argv, flag):
    for i, tok in enumerate(argv):
        if tok == flag and i + 1 < len(argv):
            return argv[i + 1]
        if tok.startswith(flag + "="):
            return tok.split("=", 1)[1]
    return None


# ---------------------------------------------------------------------------------------
# The container image's entrypoint (deploy/Containerfile)
# ---------------------------------------------------------------------------------------

def containerfile_instructions(text):
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line, pending = pending + line, ""
        instr, _, args = line.strip().partition(" ")
        out.append((instr.upper(), args.strip()))
    return out


def image_defaults():
    """ENTRYPOINT and CMD of the final stage, as lists."""
    entry, cmd = None, None
    for instr, args in containerfile_instructions(CONTAINERFILE.read_text()):
        if instr == "FROM":
            entry, cmd = None, None
        elif instr == "ENTRYPOINT":
            entry = json.loads(args)
        elif instr == "CMD":
            cmd = json.loads(args)
    return entry, cmd


def container_argv(container):
    """The argv after the sohoa binary, or None when the container does not run sohoa."""
    entry, cmd = image_defaults()
    command = container.get("command")
    args = container.get("args")
    if command is None:
        command = entry
        if args is None:
            args = cmd
    if not command or pathlib.PurePath(str(command[0])).name != "sohoa":
        return None
    return [str(a) for a in list(command[1:]) + list(args or [])]


# ---------------------------------------------------------------------------------------
# YAML and a minimal kustomize
# ---------------------------------------------------------------------------------------

def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator",
                      "generatorOptions", "patches", "images"}
KUSTOMIZATION_DEPRECATED = {"patchesStrategicMerge", "patchesJson6902", "bases", "vars",
                            "commonLabels", "imageTags"}


class RenderError(Exception):
    pass


# Strategic-merge keys of the lists we patch (from the Kubernetes API's patchMergeKey).
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "envFrom": None,
              "volumes": "name", "volumeMounts": "mountPath", "ports": "containerPort",
              "topologySpreadConstraints": "topologyKey", "imagePullSecrets": "name"}


def patch_directives(obj, path=()):
    """The `$...` keys (strategic-merge directives) anywhere in a patch, with their place."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if str(k).startswith("$"):
                found.append((path, k, v))
            found += patch_directives(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found += patch_directives(v, path + (i,))
    return found


def strategic_merge(base, patch):
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            strategic_merge(base[key], value)
        elif (isinstance(value, list) and isinstance(base.get(key), list)
              and MERGE_KEYS.get(key) and all(isinstance(v, dict) for v in value)):
            mk = MERGE_KEYS[key]
            for item in value:
                match = next((b for b in base[key] if isinstance(b, dict) and b.get(mk) == item.get(mk)), None)
                if match is None:
                    base[key].append(copy.deepcopy(item))
                else:
                    strategic_merge(match, item)
        else:
            base[key] = copy.deepcopy(value)


def image_name(image):
    """The image reference without its tag or digest."""
    image = image.split("@", 1)[0]
    head, _, last = image.rpartition("/")
    return (head + "/" if head else "") + last.split(":", 1)[0]


def parse_generator_file(spec, kdir):
    key, sep, path = spec.partition("=")
    if not sep:
        key, path = pathlib.PurePath(spec).name, spec
    return key, kdir / path


def render(kdir):
    """The objects a kustomization produces (ConfigMaps without the hash suffix)."""
    kdir = pathlib.Path(kdir)
    k = load_docs(kdir / "kustomization.yaml")[0]
    unknown = set(k) - KUSTOMIZATION_KEYS
    if unknown:
        raise RenderError(f"{rel(kdir)}: this checker's kustomize does not implement {sorted(unknown)}")
    objs = []
    for res in k.get("resources", []):
        path = kdir / res
        if path.is_dir():
            objs += render(path)
        elif path.is_file():
            objs += load_docs(path)
        else:
            raise RenderError(f"{rel(kdir)}: resource {res} does not exist")
    for gen in k.get("configMapGenerator", []):
        data = {}
        for spec in gen.get("files", []):
            key, path = parse_generator_file(spec, kdir)
            if not path.is_file():
                raise RenderError(f"{rel(kdir)}: configMapGenerator file {spec} does not exist")
            data[key] = path.read_text()
        for lit in gen.get("literals", []):
            key, _, value = lit.partition("=")
            data[key] = value
        for env_file in gen.get("envs", []):
            path = kdir / env_file
            if not path.is_file():
                raise RenderError(f"{rel(kdir)}: configMapGenerator envs file {env_file} does not exist")
            data.update(read_env_file(path))
        behavior = gen.get("behavior", "create")
        existing = [o for o in objs if o.get("kind") == "ConfigMap" and dig(o, "metadata", "name") == gen["name"]]
        if behavior == "create":
            if existing:
                raise RenderError(f"{rel(kdir)}: ConfigMap {gen['name']} exists already: use behavior: merge")
            objs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
        elif not existing:
            raise RenderError(f"{rel(kdir)}: configMapGenerator {gen['name']} ({behavior}) has no base to {behavior}")
        elif behavior == "merge":
            existing[0].setdefault("data", {}).update(data)
        else:
            existing[0]["data"] = data
    for p in k.get("patches", []):
        if set(p) - {"path", "target"} or "target" in p:
            raise RenderError(f"{rel(kdir)}: only strategic-merge patches by path are implemented here")
        path = kdir / p["path"]
        if not path.is_file():
            raise RenderError(f"{rel(kdir)}: patch {p['path']} does not exist")
        for patch in load_docs(path):
            kind, name = patch.get("kind"), dig(patch, "metadata", "name")
            targets = [o for o in objs if o.get("kind") == kind and dig(o, "metadata", "name") == name]
            if not targets:
                raise RenderError(f"{rel(path)}: patches {kind}/{name}, which is not among the resources")
            directives = patch_directives(patch)
            if directives == [((), "$patch", "delete")]:
                # The whole object goes; other top-level fields of such a patch are ignored.
                objs = [o for o in objs if not any(o is t for t in targets)]
                continue
            if directives:
                raise RenderError(f"{rel(path)}: this checker's kustomize does not implement the "
                                  f"directives {[(list(p), k, v) for p, k, v in directives]}: only a "
                                  "top-level `$patch: delete`")
            for t in targets:
                strategic_merge(t, patch)
    for img in k.get("images", []):
        for obj in objs:
            for c in all_containers(obj):
                if image_name(str(c.get("image", ""))) == img["name"]:
                    c["image"] = img.get("newName", img["name"]) + (f":{img['newTag']}" if "newTag" in img else "")
    if "namespace" in k:
        for obj in objs:
            obj.setdefault("metadata", {})["namespace"] = k["namespace"]
    return objs


def kustomization_errors(kdir, base_objects=None):
    """Paths that exist, no secret generators, overlay patches that target base objects."""
    kdir = pathlib.Path(kdir)
    errors = []
    kfile = kdir / "kustomization.yaml"
    if not kfile.is_file():
        return [f"{rel(kdir)}: no kustomization.yaml"]
    k = load_docs(kfile)[0]
    where = rel(kfile)
    if k.get("apiVersion") != "kustomize.config.k8s.io/v1beta1" or k.get("kind") != "Kustomization":
        errors.append(f"{where}: apiVersion/kind must be kustomize.config.k8s.io/v1beta1 Kustomization")
    for key in set(k) & KUSTOMIZATION_DEPRECATED:
        errors.append(f"{where}: {key} is deprecated in kustomize v5: use resources/patches/labels")
    if "secretGenerator" in k:
        errors.append(f"{where}: secretGenerator would put secret values in the repository: "
                      "create Secrets out of band and reference them")
    for res in k.get("resources", []) or []:
        path = kdir / res
        if not (path.is_file() or (path / "kustomization.yaml").is_file()):
            errors.append(f"{where}: resource {res} does not exist")
    for p in k.get("patches", []) or []:
        if "path" in p and not (kdir / p["path"]).is_file():
            errors.append(f"{where}: patch {p['path']} does not exist")
    for gen in k.get("configMapGenerator", []) or []:
        for spec in gen.get("files", []) or []:
            _, path = parse_generator_file(spec, kdir)
            if not path.is_file():
                errors.append(f"{where}: configMapGenerator {gen.get('name')}: file {spec} does not exist")
        for env_file in gen.get("envs", []) or []:
            if not (kdir / env_file).is_file():
                errors.append(f"{where}: configMapGenerator {gen.get('name')}: envs file {env_file} does not exist")
        for lit in gen.get("literals", []) or []:
            if "=" not in lit:
                errors.append(f"{where}: configMapGenerator literal {lit!r} is not KEY=VALUE")
    if base_objects is not None:
        present = {(o.get("kind"), dig(o, "metadata", "name")) for o in base_objects}
        for p in k.get("patches", []) or []:
            path = kdir / p.get("path", "")
            if not path.is_file():
                continue
            for patch in load_docs(path):
                ref = (patch.get("kind"), dig(patch, "metadata", "name"))
                if ref not in present:
                    errors.append(f"{rel(path)}: patches {ref[0]}/{ref[1]}, which the base does not have")
                    continue
                target = next(o for o in base_objects if (o.get("kind"), dig(o, "metadata", "name")) == ref)
                names = {c.get("name") for c in all_containers(target)}
                for c in all_containers(patch):
                    if c.get("name") not in names:
                        errors.append(f"{rel(path)}: container {c.get('name')} is not in {ref[0]}/{ref[1]}: "
                                      "the patch would add a container without an image")
    return errors


# ---------------------------------------------------------------------------------------
# Kubernetes objects: a table of fields per kind, and cross-references
# ---------------------------------------------------------------------------------------

API_VERSIONS = {
    "Deployment": "apps/v1",
    "CronJob": "batch/v1",
    "Job": "batch/v1",
    "PodDisruptionBudget": "policy/v1",
    "Service": "v1",
    "ConfigMap": "v1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PodMonitor": "monitoring.coreos.com/v1",
}

INT = int
STR = str
BOOL = bool
INT_OR_STR = (int, str)

# field: type, for the spec of each kind; `required` lists what the API server demands.
SPEC_FIELDS = {
    "Deployment": ({"replicas": INT, "selector": dict, "template": dict, "strategy": dict,
                    "minReadySeconds": INT, "revisionHistoryLimit": INT,
                    "progressDeadlineSeconds": INT, "paused": BOOL},
                   {"selector", "template"}),
    "CronJob": ({"schedule": STR, "timeZone": STR, "jobTemplate": dict, "concurrencyPolicy": STR,
                 "suspend": BOOL, "startingDeadlineSeconds": INT, "successfulJobsHistoryLimit": INT,
                 "failedJobsHistoryLimit": INT},
                {"schedule", "jobTemplate"}),
    "Job": ({"template": dict, "completions": INT, "parallelism": INT, "completionMode": STR,
             "backoffLimit": INT, "backoffLimitPerIndex": INT, "maxFailedIndexes": INT,
             "activeDeadlineSeconds": INT, "ttlSecondsAfterFinished": INT, "suspend": BOOL,
             "podFailurePolicy": dict, "successPolicy": dict, "podReplacementPolicy": STR,
             "selector": dict, "manualSelector": BOOL},
            {"template"}),
    "PodDisruptionBudget": ({"minAvailable": INT_OR_STR, "maxUnavailable": INT_OR_STR, "selector": dict,
                             "unhealthyPodEvictionPolicy": STR},
                            {"selector"}),
    "Service": ({"selector": dict, "ports": list, "type": STR, "clusterIP": STR, "clusterIPs": list,
                 "publishNotReadyAddresses": BOOL, "sessionAffinity": STR, "ipFamilyPolicy": STR,
                 "internalTrafficPolicy": STR, "externalTrafficPolicy": STR},
                {"ports"}),
    "ServiceMonitor": ({"selector": dict, "endpoints": list, "jobLabel": STR, "namespaceSelector": dict,
                        "targetLabels": list, "podTargetLabels": list, "sampleLimit": INT},
                       {"selector", "endpoints"}),
    "PodMonitor": ({"selector": dict, "podMetricsEndpoints": list, "jobLabel": STR,
                    "namespaceSelector": dict, "podTargetLabels": list, "sampleLimit": INT},
                   {"selector", "podMetricsEndpoints"}),
}

POD_SPEC_FIELDS = {
    "containers": list, "initContainers": list, "volumes": list, "restartPolicy": STR,
    "terminationGracePeriodSeconds": INT, "activeDeadlineSeconds": INT, "securityContext": dict,
    "serviceAccountName": STR, "automountServiceAccountToken": BOOL, "affinity": dict,
    "topologySpreadConstraints": list, "tolerations": list, "nodeSelector": dict,
    "priorityClassName": STR, "imagePullSecrets": list, "dnsPolicy": STR, "enableServiceLinks": BOOL,
    "hostNetwork": BOOL, "hostPID": BOOL, "hostIPC": BOOL, "shareProcessNamespace": BOOL,
    "runtimeClassName": STR, "schedulerName": STR, "hostname": STR, "subdomain": STR,
}

CONTAINER_FIELDS = {
    "name": STR, "image": STR, "imagePullPolicy": STR, "command": list, "args": list,
    "workingDir": STR, "ports": list, "env": list, "envFrom": list, "resources": dict,
    "resizePolicy": list, "restartPolicy": STR, "volumeMounts": list, "volumeDevices": list,
    "livenessProbe": dict, "readinessProbe": dict, "startupProbe": dict, "lifecycle": dict,
    "securityContext": dict, "terminationMessagePath": STR, "terminationMessagePolicy": STR,
    "stdin": BOOL, "stdinOnce": BOOL, "tty": BOOL,
}

PROBE_FIELDS = {"httpGet": dict, "tcpSocket": dict, "exec": dict, "grpc": dict,
                "initialDelaySeconds": INT, "periodSeconds": INT, "timeoutSeconds": INT,
                "successThreshold": INT, "failureThreshold": INT, "terminationGracePeriodSeconds": INT}

VOLUME_SOURCES = {"configMap", "secret", "emptyDir", "persistentVolumeClaim", "projected",
                  "downwardAPI", "hostPath", "csi", "ephemeral", "nfs"}

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
QUANTITY_FACTOR = {None: 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
                   "P": 1e15, "E": 1e18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
                   "Pi": 2**50, "Ei": 2**60}
CRON_FIELD = re.compile(r"^[0-9*/,\-A-Za-z?]+$")
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def quantity(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = QUANTITY.match(str(value))
    return float(m.group(1)) * QUANTITY_FACTOR[m.group(2)] if m else None


def field_errors(obj, fields, required, where):
    if not isinstance(obj, dict):
        return [f"{where}: must be a mapping"]
    errors = [f"{where}: missing required field {f}" for f in sorted(required - set(obj))]
    for key, value in obj.items():
        if key not in fields:
            errors.append(f"{where}: unknown field {key}")
            continue
        want = fields[key]
        wants = want if isinstance(want, tuple) else (want,)
        ok = isinstance(value, wants) and not (isinstance(value, bool) and bool not in wants)
        if not ok:
            errors.append(f"{where}.{key}: must be {'/'.join(t.__name__ for t in wants)}, "
                          f"not {_type_name(value)}")
    return errors


def pod_template(obj):
    kind = obj.get("kind")
    if kind in ("Deployment", "Job"):
        return dig(obj, "spec", "template")
    if kind == "CronJob":
        return dig(obj, "spec", "jobTemplate", "spec", "template")
    return None


def job_spec(obj):
    if obj.get("kind") == "Job":
        return dig(obj, "spec")
    if obj.get("kind") == "CronJob":
        return dig(obj, "spec", "jobTemplate", "spec")
    return None


def all_containers(obj):
    spec = dig(pod_template(obj) or {}, "spec") or {}
    out = []
    for key in ("initContainers", "containers"):
        out += [c for c in spec.get(key) or [] if isinstance(c, dict)]
    return out


def matches(selector_labels, labels):
    return bool(selector_labels) and all((labels or {}).get(k) == v for k, v in selector_labels.items())


def name(obj):
    return f"{obj.get('kind')}/{dig(obj, 'metadata', 'name')}"


def container_errors(c, pod_spec, where, indexed_job=False):
    errors = field_errors(c, CONTAINER_FIELDS, {"name", "image"}, where)
    if isinstance(c.get("name"), str) and not DNS_LABEL.match(c["name"]):
        errors.append(f"{where}: name {c['name']!r} is not a DNS label")
    if isinstance(c.get("image"), str) and not c["image"].strip():
        errors.append(f"{where}: image is empty")
    ports = [p for p in c.get("ports") or [] if isinstance(p, dict)]
    port_names = {p.get("name") for p in ports if p.get("name")}
    port_numbers = {p.get("containerPort") for p in ports}
    for p in ports:
        if not isinstance(p.get("containerPort"), int) or not 0 < p["containerPort"] < 65536:
            errors.append(f"{where}: port {p} needs an integer containerPort")
        if p.get("name") and (len(p["name"]) > 15 or not DNS_LABEL.match(p["name"])):
            errors.append(f"{where}: port name {p['name']!r} must be a DNS label of at most 15 characters")
        if p.get("protocol", "TCP") not in ("TCP", "UDP", "SCTP"):
            errors.append(f"{where}: port protocol {p.get('protocol')!r}")
    for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = c.get(probe_name)
        if probe is None:
            continue
        errors += field_errors(probe, PROBE_FIELDS, set(), f"{where}.{probe_name}")
        handler = dig(probe, "httpGet") or dig(probe, "tcpSocket") or dig(probe, "grpc")
        if isinstance(handler, dict):
            port = handler.get("port")
            if isinstance(port, str) and port not in port_names:
                errors.append(f"{where}.{probe_name}: port {port!r} is not a declared container port name "
                              f"({sorted(port_names)})")
            elif isinstance(port, int) and port not in port_numbers:
                errors.append(f"{where}.{probe_name}: port {port} is not a declared containerPort")
            elif port is None:
                errors.append(f"{where}.{probe_name}: missing port")
        if isinstance(dig(probe, "httpGet"), dict) and not str(probe["httpGet"].get("path", "/")).startswith("/"):
            errors.append(f"{where}.{probe_name}: path must start with /")
    env_names = set()
    for e in c.get("env") or []:
        if not isinstance(e, dict) or not isinstance(e.get("name"), str):
            errors.append(f"{where}: env entry {e} needs a name")
            continue
        env_names.add(e["name"])
        if ("value" in e) == ("valueFrom" in e):
            errors.append(f"{where}: env {e['name']} needs exactly one of value and valueFrom")
        if "value" in e and not isinstance(e["value"], str):
            errors.append(f"{where}: env {e['name']}: value must be a string (quote it), not {_type_name(e['value'])}")
        if "valueFrom" in e:
            vf = e["valueFrom"]
            sources = set(vf or {}) & {"secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef"}
            if not isinstance(vf, dict) or len(vf) != 1 or len(sources) != 1:
                errors.append(f"{where}: env {e['name']}: valueFrom needs exactly one source")
            for ref in ("secretKeyRef", "configMapKeyRef"):
                if ref in (vf or {}) and not (dig(vf, ref, "name") and dig(vf, ref, "key")):
                    errors.append(f"{where}: env {e['name']}: {ref} needs name and key")
    for ef in c.get("envFrom") or []:
        if not isinstance(ef, dict) or not (dig(ef, "configMapRef", "name") or dig(ef, "secretRef", "name")):
            errors.append(f"{where}: envFrom entry {ef} needs configMapRef.name or secretRef.name")
    volumes = {v.get("name") for v in pod_spec.get("volumes") or [] if isinstance(v, dict)}
    for vm in c.get("volumeMounts") or []:
        if not isinstance(vm, dict) or vm.get("name") not in volumes:
            errors.append(f"{where}: volumeMount {vm} names no volume of the pod ({sorted(volumes)})")
        elif not str(vm.get("mountPath", "")).startswith("/"):
            errors.append(f"{where}: volumeMount {vm['name']}: mountPath must be absolute")
    resources = c.get("resources")
    if resources is not None:
        errors += field_errors(resources, {"requests": dict, "limits": dict, "claims": list}, set(),
                               f"{where}.resources")
        for kind in ("requests", "limits"):
            for res, value in (dig(resources, kind) or {}).items():
                if res not in ("cpu", "memory", "ephemeral-storage") and "/" not in res:
                    errors.append(f"{where}.resources.{kind}: unknown resource {res}")
                if quantity(value) is None:
                    errors.append(f"{where}.resources.{kind}.{res}: {value!r} is not a quantity")
        for res, limit in (dig(resources, "limits") or {}).items():
            request = (dig(resources, "requests") or {}).get(res)
            if request is not None and quantity(request) and quantity(limit) and quantity(request) > quantity(limit):
                errors.append(f"{where}.resources: {res} request {request} is above its limit {limit}")
    defined = set(env_names) | ({"JOB_COMPLETION_INDEX"} if indexed_job else set())
    for arg in list(c.get("command") or []) + list(c.get("args") or []):
        for ref in VAR_REF.findall(str(arg)):
            if ref not in defined:
                errors.append(f"{where}: $({ref}) in the arguments is not an env var of the container"
                              + ("" if indexed_job or ref != "JOB_COMPLETION_INDEX" else
                                 " (JOB_COMPLETION_INDEX exists only in Indexed Jobs)"))
    return errors


def pod_errors(template, where, job=False, indexed_job=False):
    if not isinstance(template, dict):
        return [f"{where}: missing pod template"]
    errors = field_errors(template, {"metadata": dict, "spec": dict}, {"spec"}, where)
    spec = template.get("spec")
    if not isinstance(spec, dict):
        return errors
    errors += field_errors(spec, POD_SPEC_FIELDS, {"containers"}, f"{where}.spec")
    if not spec.get("containers"):
        errors.append(f"{where}.spec: containers must not be empty")
    if job and spec.get("restartPolicy") not in ("Never", "OnFailure"):
        errors.append(f"{where}.spec: a Job's pods need restartPolicy Never or OnFailure")
    names = set()
    for v in spec.get("volumes") or []:
        if not isinstance(v, dict) or not v.get("name"):
            errors.append(f"{where}.spec.volumes: {v} needs a name")
            continue
        if v["name"] in names:
            errors.append(f"{where}.spec.volumes: {v['name']} declared twice")
        names.add(v["name"])
        sources = set(v) - {"name"}
        if len(sources) != 1 or not sources <= VOLUME_SOURCES:
            errors.append(f"{where}.spec.volumes.{v['name']}: needs exactly one known source, has {sorted(sources)}")
    seen = set()
    for i, c in enumerate(spec.get("containers") or []):
        if not isinstance(c, dict):
            errors.append(f"{where}: containers[{i}] must be a mapping")
            continue
        cname = c.get("name", i)
        if cname in seen:
            errors.append(f"{where}: container {cname} declared twice")
        seen.add(cname)
        errors += container_errors(c, spec, f"{where}.containers[{cname}]", indexed_job)
    for tsc in spec.get("topologySpreadConstraints") or []:
        labels = dig(template, "metadata", "labels") or {}
        if not matches(dig(tsc, "labelSelector", "matchLabels"), labels):
            errors.append(f"{where}: topologySpreadConstraint on {tsc.get('topologyKey')} does not select "
                          "the pod's own labels")
    return errors


def object_errors(objs, where, resolve_config_maps=True):
    """The per-kind field table, then cross-references among `objs` (one rendering)."""
    errors = []
    for obj in objs:
        if not isinstance(obj, dict):
            errors.append(f"{where}: a document is not a mapping")
            continue
        kind = obj.get("kind")
        here = f"{where}: {name(obj)}"
        for f in ("apiVersion", "kind"):
            if not isinstance(obj.get(f), str):
                errors.append(f"{here}: missing {f}")
        if not isinstance(dig(obj, "metadata", "name"), str):
            errors.append(f"{here}: missing metadata.name")
        elif not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", obj["metadata"]["name"]):
            errors.append(f"{here}: metadata.name is not a DNS subdomain")
        if kind == "Secret":
            if obj.get("data") or obj.get("stringData"):
                errors.append(f"{here}: a Secret with data in the repository: create it out of band")
            continue
        if kind not in API_VERSIONS:
            errors.append(f"{here}: kind {kind} is not one this checker knows: add it to API_VERSIONS "
                          "and SPEC_FIELDS")
            continue
        if obj.get("apiVersion") != API_VERSIONS[kind]:
            errors.append(f"{here}: apiVersion {obj.get('apiVersion')} should be {API_VERSIONS[kind]}")
        if kind == "ConfigMap":
            for key, value in (obj.get("data") or {}).items():
                if not isinstance(value, str):
                    errors.append(f"{here}: data.{key} must be a string")
            continue
        fields, required = SPEC_FIELDS[kind]
        errors += field_errors(obj.get("spec"), fields, required, f"{here} spec")
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        if kind == "Deployment":
            errors += pod_errors(spec.get("template"), f"{here} template")
            sel = dig(spec, "selector", "matchLabels")
            if not matches(sel, dig(spec, "template", "metadata", "labels")):
                errors.append(f"{here}: spec.selector.matchLabels {sel} does not match the template's labels")
        elif kind == "CronJob":
            schedule = str(spec.get("schedule", ""))
            if not (schedule.startswith("@") or (len(schedule.split()) == 5
                                                 and all(CRON_FIELD.match(f) for f in schedule.split()))):
                errors.append(f"{here}: schedule {schedule!r} is not a 5-field cron expression")
            if spec.get("concurrencyPolicy", "Allow") not in ("Allow", "Forbid", "Replace"):
                errors.append(f"{here}: concurrencyPolicy {spec.get('concurrencyPolicy')!r}")
            errors += field_errors(spec.get("jobTemplate"), {"metadata": dict, "spec": dict}, {"spec"},
                                   f"{here} jobTemplate")
        if kind in ("Job", "CronJob"):
            js = job_spec(obj)
            js = js if isinstance(js, dict) else {}
            if kind == "CronJob":
                errors += field_errors(js, *SPEC_FIELDS["Job"], f"{here} jobTemplate.spec")
            indexed = js.get("completionMode") == "Indexed"
            if js.get("completionMode", "NonIndexed") not in ("NonIndexed", "Indexed"):
                errors.append(f"{here}: completionMode {js.get('completionMode')!r}")
            if indexed:
                for f in ("completions", "parallelism"):
                    if not isinstance(js.get(f), int) or isinstance(js.get(f), bool) or js[f] < 1:
                        errors.append(f"{here}: an Indexed Job needs {f} (a positive integer)")
            errors += pod_errors(js.get("template"), f"{here} template", job=True, indexed_job=indexed)
        if kind == "PodDisruptionBudget":
            if ("minAvailable" in spec) == ("maxUnavailable" in spec):
                errors.append(f"{here}: needs exactly one of minAvailable and maxUnavailable")
    # Cross-references within the rendering.
    workloads = [o for o in objs if isinstance(o, dict) and pod_template(o) is not None]
    pods = [(o, dig(pod_template(o), "metadata", "labels") or {}) for o in workloads]
    services = [o for o in objs if isinstance(o, dict) and o.get("kind") == "Service"]
    config_maps = {dig(o, "metadata", "name") for o in objs if isinstance(o, dict) and o.get("kind") == "ConfigMap"}
    for obj in objs:
        if not isinstance(obj, dict):
            continue
        kind, here = obj.get("kind"), f"{where}: {name(obj)}"
        if kind == "PodDisruptionBudget":
            sel = dig(obj, "spec", "selector", "matchLabels")
            if not any(matches(sel, labels) for o, labels in pods if o.get("kind") == "Deployment"):
                errors.append(f"{here}: selector {sel} matches no Deployment's pods")
        if kind == "Service":
            sel = dig(obj, "spec", "selector")
            selected = [o for o, labels in pods if matches(sel, labels)]
            if not selected:
                errors.append(f"{here}: selector {sel} matches no pods")
            for p in dig(obj, "spec", "ports") or []:
                if not isinstance(p, dict) or not isinstance(p.get("port"), int):
                    errors.append(f"{here}: port {p} needs an integer port")
                    continue
                target = p.get("targetPort", p["port"])
                for o in selected:
                    cports = [cp for c in all_containers(o) for cp in c.get("ports") or []]
                    ok = (any(cp.get("name") == target for cp in cports) if isinstance(target, str)
                          else any(cp.get("containerPort") == target for cp in cports))
                    if not ok:
                        errors.append(f"{here}: targetPort {target!r} is not a container port of {name(o)}")
        if kind == "ServiceMonitor":
            sel = dig(obj, "spec", "selector", "matchLabels")
            selected = [s for s in services if matches(sel, dig(s, "metadata", "labels"))]
            if not selected:
                errors.append(f"{here}: selector {sel} matches no Service's labels")
            for ep in dig(obj, "spec", "endpoints") or []:
                for s in selected:
                    if ep.get("port") not in {p.get("name") for p in dig(s, "spec", "ports") or []}:
                        errors.append(f"{here}: endpoint port {ep.get('port')!r} is not a port name of {name(s)}")
        if kind == "PodMonitor":
            sel = dig(obj, "spec", "selector", "matchLabels")
            selected = [o for o, labels in pods if matches(sel, labels)]
            if not selected:
                errors.append(f"{here}: selector {sel} matches no pods")
            for ep in dig(obj, "spec", "podMetricsEndpoints") or []:
                for o in selected:
                    names = {cp.get("name") for c in all_containers(o) for cp in c.get("ports") or []}
                    if ep.get("port") not in names:
                        errors.append(f"{here}: port {ep.get('port')!r} is not a container port name of {name(o)}")
        if resolve_config_maps and pod_template(obj) is not None:
            spec = dig(pod_template(obj), "spec") or {}
            refs = [dig(v, "configMap", "name") for v in spec.get("volumes") or [] if isinstance(v, dict)]
            refs += [dig(ef, "configMapRef", "name") for c in all_containers(obj) for ef in c.get("envFrom") or []]
            for ref in refs:
                if ref and ref not in config_maps:
                    errors.append(f"{here}: ConfigMap {ref} is not among the rendered objects")
    return errors


def secret_errors(objs, where):
    """Secrets are referenced, never written: no Secret data, no literal secret-looking env."""
    errors = []
    for obj in objs:
        if not isinstance(obj, dict):
            continue
        here = f"{where}: {name(obj)}"
        if obj.get("kind") == "Secret" and (obj.get("data") or obj.get("stringData")):
            errors.append(f"{here}: Secret with data or stringData")
        if obj.get("kind") == "ConfigMap":
            for key, value in (obj.get("data") or {}).items():
                if SECRET_ENV.search(key):
                    errors.append(f"{here}: {key} looks like a secret: reference a Secret instead")
                if key.endswith(".toml"):
                    doc, _ = parse_toml(value, f"{here} {key}")
                    errors += [e for e in toml_key_errors(doc, f"{here} {key}") if "looks like a secret" in e]
        for c in all_containers(obj):
            for e in c.get("env") or []:
                if not isinstance(e, dict) or not SECRET_ENV.search(str(e.get("name", ""))):
                    continue
                if "value" in e or not dig(e, "valueFrom", "secretKeyRef"):
                    errors.append(f"{here}: container {c.get('name')}: env {e.get('name')} looks like a secret "
                                  "and must come from valueFrom.secretKeyRef, not a literal value")
    return errors


def env_of(container, config_maps, secret_placeholder=True):
    """The environment a container gets: envFrom ConfigMaps, then env (secrets as placeholders)."""
    env = {}
    for ef in container.get("envFrom") or []:
        env.update(config_maps.get(dig(ef, "configMapRef", "name"), {}))
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif secret_placeholder and dig(e, "valueFrom", "secretKeyRef"):
            env[e["name"]] = "0123456789abcdef0123456789abcdef"
    return env


def config_file_of(obj, container, argv, config_maps):
    """The text of the --config file, resolved through the volume mounts to a ConfigMap."""
    path = flag_value(argv, "--config")
    if path is None:
        return None, []
    spec = dig(pod_template(obj), "spec") or {}
    for vm in container.get("volumeMounts") or []:
        mount = vm.get("mountPath", "").rstrip("/") + "/"
        if path.startswith(mount):
            volume = next((v for v in spec.get("volumes") or [] if v.get("name") == vm.get("name")), {})
            cm = dig(volume, "configMap", "name")
            key = path[len(mount):]
            for item in dig(volume, "configMap", "items") or []:
                if item.get("path") == key:
                    key = item.get("key")
            if cm in config_maps and key in config_maps[cm]:
                return config_maps[cm][key], []
            return None, [f"{name(obj)}: --config {path} is not a key of a mounted ConfigMap"]
    return None, [f"{name(obj)}: --config {path} is not under any volume mount"]


def sohoa_runs(objs):
    """(object, container, argv, env, config text, problems) for each container running sohoa."""
    config_maps = {dig(o, "metadata", "name"): o.get("data") or {}
                   for o in objs if isinstance(o, dict) and o.get("kind") == "ConfigMap"}
    out = []
    for obj in objs:
        if not isinstance(obj, dict):
            continue
        for c in all_containers(obj):
            argv = container_argv(c)
            if argv is None:
                continue
            text, problems = config_file_of(obj, c, argv, config_maps)
            out.append((obj, c, argv, env_of(c, config_maps), text, problems))
    return out


def sohoa_usage_errors(objs, where, help_fn=sohoa_help):
    """Flags, env names, config keys and drain deadlines of every sohoa container."""
    errors = []
    for obj in objs:
        if not isinstance(obj, dict):
            continue
        for c in all_containers(obj):
            for e in c.get("env") or []:
                err = env_name_error(str(e.get("name", ""))) if isinstance(e, dict) else None
                if err:
                    errors.append(f"{where}: {name(obj)}: {err}")
        if obj.get("kind") == "ConfigMap":
            for key, value in (obj.get("data") or {}).items():
                err = env_name_error(key)
                if err:
                    errors.append(f"{where}: {name(obj)}: {err}")
                if key.endswith(".toml"):
                    doc, problems = parse_toml(value, f"{where}: {name(obj)} {key}")
                    errors += problems + toml_key_errors(doc, f"{where}: {name(obj)} {key}")
    shard_counts, merge_counts = set(), set()
    continuous, batch_aggregators = [], []
    for obj, c, argv, env, text, problems in sohoa_runs(objs):
        here = f"{where}: {name(obj)} container {c.get('name')}"
        errors += [f"{where}: {p}" for p in problems]
        docs = [parse_toml(text, here)[0]] if text else []
        errors += command_errors(argv, here, help_fn)
        sub = sohoa_subcommand(argv)
        cfg = effective_config(docs, env)
        if obj.get("kind") == "Deployment":
            if sub == "ingest" and not flag_value(argv, "--from-file"):
                grace = dig(pod_template(obj), "spec", "terminationGracePeriodSeconds")
                errors += drain_errors(cfg, 30 if grace is None else grace, here)
            elif sub == "aggregate" and flag_value(argv, "--every"):
                continuous.append(obj)
                errors += continuous_aggregator_errors(obj, c, argv, here)
            else:
                errors.append(f"{here}: a Deployment runs `sohoa ingest` (Kafka) or `sohoa aggregate "
                              f"--every` (continuous), not {argv}")
        elif (obj.get("kind") == "CronJob" and sub == "aggregate" and dig(obj, "spec", "suspend") is not True
              and not flag_value(argv, "--every")):
            batch_aggregators.append(obj)
        shard = flag_value(argv, "--shard")
        if shard is not None:
            js = job_spec(obj) or {}
            index, _, count = shard.partition("/")
            if js.get("completionMode") != "Indexed" or index != "$(JOB_COMPLETION_INDEX)":
                errors.append(f"{here}: --shard {shard}: shards run as an Indexed Job with "
                              "--shard $(JOB_COMPLETION_INDEX)/N")
            if not count.isdigit() or int(count) != js.get("completions") or int(count) != js.get("parallelism"):
                errors.append(f"{here}: --shard {shard}: N must equal completions ({js.get('completions')}) "
                              f"and parallelism ({js.get('parallelism')})")
            else:
                shard_counts.add(int(count))
        merge = flag_value(argv, "--merge-shards")
        if merge is not None:
            merge_counts.add(int(merge) if merge.isdigit() else merge)
    if len(continuous) > 1:
        errors.append(f"{where}: {len(continuous)} continuous aggregators ({', '.join(map(name, continuous))}): "
                      "one writes the outputs")
    for cron in batch_aggregators if continuous else []:
        errors.append(f"{where}: {name(cron)} would run `sohoa aggregate` alongside the continuous "
                      f"{name(continuous[0])}, writing the same outputs: remove it (or suspend it)")
    if merge_counts and merge_counts != shard_counts:
        errors.append(f"{where}: --merge-shards {sorted(merge_counts, key=str)} does not match the shard "
                      f"Job's N {sorted(shard_counts)}")
    return errors


def continuous_aggregator_errors(obj, container, argv, here):
    """`sohoa aggregate --every` in a Deployment: one pod at a time, probes it answers."""
    errors = []
    spec = dig(obj, "spec") or {}
    if spec.get("replicas", 1) != 1:
        errors.append(f"{here}: a continuous aggregator runs one replica, not {spec.get('replicas')} "
                      "(two runs would write the same outputs)")
    if dig(spec, "strategy", "type") != "Recreate":
        errors.append(f"{here}: a continuous aggregator needs strategy Recreate, so a rollout never "
                      "runs the old and the new pod at once")
    for flag in ("--shard", "--merge-shards", "--from", "--to", "--metrics-textfile"):
        if flag_value(argv, flag) is not None:
            errors.append(f"{here}: {flag} does not belong in a continuous aggregator")
    listen = flag_value(argv, "--listen")
    if listen is None:
        errors.append(f"{here}: a continuous aggregator needs --listen for /metrics, /healthz and /readyz")
    else:
        port = listen.rpartition(":")[2]
        ports = {p.get("containerPort") for p in container.get("ports") or [] if isinstance(p, dict)}
        if not port.isdigit() or int(port) not in ports:
            errors.append(f"{here}: --listen {listen}: its port is not a containerPort ({sorted(ports, key=str)}), "
                          "so the probes and the scrape would miss it")
        if listen.startswith(("127.", "localhost", "[::1]")):
            errors.append(f"{here}: --listen {listen} is loopback: the kubelet and Prometheus cannot reach it")
    return errors


def policy_errors(objs, where):
    """Our own rules: non-root, read-only root filesystem, resources, probes on the ingestor."""
    errors = []
    for obj in objs:
        if not isinstance(obj, dict) or pod_template(obj) is None:
            continue
        spec = dig(pod_template(obj), "spec") or {}
        here = f"{where}: {name(obj)}"
        if dig(spec, "securityContext", "runAsNonRoot") is not True:
            errors.append(f"{here}: pod securityContext.runAsNonRoot must be true")
        for c in all_containers(obj):
            sc = c.get("securityContext") or {}
            if sc.get("readOnlyRootFilesystem") is not True or sc.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{here}: container {c.get('name')}: readOnlyRootFilesystem true and "
                              "allowPrivilegeEscalation false")
            if not (dig(c, "resources", "requests") and dig(c, "resources", "limits", "memory")):
                errors.append(f"{here}: container {c.get('name')}: resource requests and a memory limit")
        if obj.get("kind") == "Deployment":
            for c in all_containers(obj):
                for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                    if dig(c, probe, "httpGet", "path") != path:
                        errors.append(f"{here}: container {c.get('name')}: {probe} must GET {path}")
    return errors


def all_k8s_errors(objs, where, help_fn=sohoa_help, resolve_config_maps=True):
    return (object_errors(objs, where, resolve_config_maps) + secret_errors(objs, where)
            + sohoa_usage_errors(objs, where, help_fn) + policy_errors(objs, where))


# ---------------------------------------------------------------------------------------
# systemd units
# ---------------------------------------------------------------------------------------

UNIT_SECTIONS = {
    "Unit": {"Description", "Documentation", "Wants", "Requires", "After", "Before", "BindsTo",
             "PartOf", "Conflicts", "StartLimitIntervalSec", "StartLimitBurst", "ConditionPathExists",
             "AssertPathExists", "OnFailure"},
    "Install": {"WantedBy", "RequiredBy", "Alias", "Also", "DefaultInstance"},
    "Timer": {"OnCalendar", "OnActiveSec", "OnBootSec", "OnStartupSec", "OnUnitActiveSec",
              "OnUnitInactiveSec", "Persistent", "RandomizedDelaySec", "FixedRandomDelay", "AccuracySec",
              "Unit", "WakeSystem", "RemainAfterElapse"},
    "Service": {"Type", "ExecStart", "ExecStartPre", "ExecStartPost", "ExecStop", "ExecReload",
                "Environment", "EnvironmentFile", "KillSignal", "KillMode", "TimeoutStopSec",
                "TimeoutStartSec", "TimeoutSec", "Restart", "RestartSec", "RestartPreventExitStatus",
                "SuccessExitStatus", "DynamicUser", "User", "Group", "SupplementaryGroups",
                "StateDirectory", "StateDirectoryMode", "RuntimeDirectory", "RuntimeDirectoryMode",
                "RuntimeDirectoryPreserve", "CacheDirectory", "LogsDirectory", "WorkingDirectory",
                "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "ProtectSystem", "ProtectHome",
                "PrivateTmp", "PrivateDevices", "PrivateUsers", "NoNewPrivileges", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock",
                "ProtectHostname", "ProtectProc", "ProcSubset", "RestrictAddressFamilies",
                "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality",
                "MemoryDenyWriteExecute", "CapabilityBoundingSet", "AmbientCapabilities",
                "SystemCallArchitectures", "SystemCallFilter", "SystemCallErrorNumber", "UMask",
                "MemoryMax", "MemoryHigh", "CPUQuota", "TasksMax", "LimitNOFILE", "Nice",
                "IOSchedulingClass", "StandardOutput", "StandardError", "SyslogIdentifier",
                "WatchdogSec", "NotifyAccess", "IPAddressDeny", "IPAddressAllow"},
}
TIME_UNITS = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "s": 1, "sec": 1, "second": 1,
              "seconds": 1, "m": 60, "min": 60, "minute": 60, "minutes": 60, "h": 3600, "hr": 3600,
              "hour": 3600, "hours": 3600, "d": 86400, "day": 86400, "days": 86400}


def systemd_seconds(value):
    """A systemd time span ("60", "90s", "1min 30s") in seconds; inf for infinity."""
    value = value.strip()
    if value == "infinity":
        return math.inf
    if re.fullmatch(r"[0-9.]+", value):
        return float(value)
    total, rest = 0.0, value.replace(" ", "")
    for number, unit in re.findall(r"([0-9.]+)([a-z]+)", rest):
        if unit not in TIME_UNITS:
            raise ValueError(f"unknown time unit {unit!r} in {value!r}")
        total += float(number) * TIME_UNITS[unit]
    if re.sub(r"[0-9.]+[a-z]+", "", rest):
        raise ValueError(f"cannot read time span {value!r}")
    return total


def read_unit(path):
    """{section: [(key, value), ...]} keeping repeated keys, and configparser's verdict."""
    text = pathlib.Path(path).read_text()
    errors = []
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as e:
        errors.append(f"{rel(path)}: does not parse: {e}")
    sections, current = {}, None
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        if s.startswith("[") and s.endswith("]"):
            current = s[1:-1]
            sections.setdefault(current, [])
        elif "=" in s and current is not None:
            key, _, value = s.partition("=")
            sections[current].append((key.strip(), value.strip()))
        else:
            errors.append(f"{rel(path)}:{n}: not a section header nor key=value: {s!r}")
    return sections, errors


def read_env_file(path):
    """KEY=VALUE lines (as systemd's EnvironmentFile and kustomize's envs read them)."""
    env = {}
    for line in pathlib.Path(path).read_text().splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        key, _, value = s.partition("=")
        env[key.strip()] = value.strip().strip('"')
    return env


def unit_values(sections, section, key):
    return [v for k, v in sections.get(section, []) if k == key]


def exec_argv(value):
    return shlex.split(value.lstrip("-@:+!"))


def unit_env(sections):
    env = {}
    for value in unit_values(sections, "Service", "Environment"):
        for token in shlex.split(value):
            key, _, v = token.partition("=")
            env[key] = v
    return env


def unit_errors(path, help_fn=sohoa_help, config_dir=SYSTEMD):
    """Parses; known directives; ExecStart runs sohoa with real flags; stop outlasts drain."""
    path = pathlib.Path(path)
    sections, errors = read_unit(path)
    where = rel(path)
    if "Unit" not in sections or not unit_values(sections, "Unit", "Description"):
        errors.append(f"{where}: needs [Unit] Description=")
    for section, items in sections.items():
        if section not in UNIT_SECTIONS:
            errors.append(f"{where}: unknown section [{section}]")
            continue
        for key, _ in items:
            if key not in UNIT_SECTIONS[section]:
                errors.append(f"{where}: [{section}] {key}= is not a directive this checker knows "
                              "(a typo? add it to UNIT_SECTIONS if real)")
    if path.suffix == ".timer":
        if not unit_values(sections, "Timer", "OnCalendar"):
            errors.append(f"{where}: a timer needs OnCalendar=")
        unit = (unit_values(sections, "Timer", "Unit") or [path.stem + ".service"])[0]
        if not (path.parent / unit).is_file():
            errors.append(f"{where}: activates {unit}, which is not beside it")
        return errors
    starts = unit_values(sections, "Service", "ExecStart")
    if len(starts) != 1:
        errors.append(f"{where}: needs exactly one ExecStart=")
        return errors
    argv = exec_argv(starts[0])
    if not argv[0].startswith("/") or pathlib.PurePath(argv[0]).name != "sohoa":
        errors.append(f"{where}: ExecStart must run the sohoa binary by absolute path, not {argv[0]}")
    errors += command_errors(argv[1:], where, help_fn)
    env = {}
    for env_file in unit_values(sections, "Service", "EnvironmentFile"):
        example = config_dir / (pathlib.PurePath(env_file.lstrip("-")).name + ".example")
        if example.is_file():
            env.update(read_env_file(example))
        else:
            errors.append(f"{where}: EnvironmentFile {env_file} has no {example.name} beside the unit")
    env.update(unit_env(sections))
    for key in env:
        err = env_name_error(key)
        if err:
            errors.append(f"{where}: {err}")
        if SECRET_ENV.search(key) and key in unit_env(sections):
            errors.append(f"{where}: {key} looks like a secret: put it in the EnvironmentFile, not the unit")
    docs = []
    config = flag_value(argv, "--config")
    if config:
        local = config_dir / pathlib.PurePath(config).name
        if not local.is_file():
            errors.append(f"{where}: --config {config}: no example {local.name} beside the unit")
        else:
            docs.append(tomllib.loads(local.read_text()))
    sub = sohoa_subcommand(argv[1:])
    if sub == "ingest":
        if unit_values(sections, "Service", "Restart") != ["on-failure"]:
            errors.append(f"{where}: an ingestor needs Restart=on-failure")
        stop = unit_values(sections, "Service", "TimeoutStopSec") or unit_values(sections, "Service", "TimeoutSec")
        try:
            seconds = systemd_seconds(stop[-1]) if stop else 90.0  # systemd's DefaultTimeoutStopSec
        except ValueError as e:
            errors.append(f"{where}: TimeoutStopSec: {e}")
            seconds = 0
        if seconds == math.inf:
            errors.append(f"{where}: TimeoutStopSec=infinity: a stuck drain would never be killed")
        errors += drain_errors(effective_config(docs, env), seconds, where)
        if not any("%i" in v for _, v in sections.get("Service", [])) and "@" in path.name:
            errors.append(f"{where}: a template unit should use its instance (%i)")
    if sub == "aggregate" and flag_value(argv, "--every"):
        errors += continuous_unit_errors(path, sections, argv)
    hardening = {"DynamicUser": "yes", "ProtectSystem": "strict", "NoNewPrivileges": "yes"}
    for key, want in hardening.items():
        if unit_values(sections, "Service", key) != [want]:
            errors.append(f"{where}: needs {key}={want}")
    return errors


def continuous_unit_errors(path, sections, argv):
    """`sohoa aggregate --every` as a service: long-running, restarted, never beside the timer."""
    where = rel(path)
    errors = []
    if unit_values(sections, "Service", "Type") not in (["simple"], ["exec"]):
        errors.append(f"{where}: a continuous aggregator runs until stopped: Type=exec (or simple), not "
                      f"{unit_values(sections, 'Service', 'Type') or 'the default'}")
    if unit_values(sections, "Service", "Restart") != ["on-failure"]:
        errors.append(f"{where}: a continuous aggregator needs Restart=on-failure")
    if flag_value(argv, "--listen") is None:
        errors.append(f"{where}: a continuous aggregator needs --listen, or its metrics reach no one")
    if flag_value(argv, "--metrics-textfile") is not None:
        errors.append(f"{where}: --metrics-textfile with --every: scrape --listen instead")
    conflicts = set(" ".join(unit_values(sections, "Unit", "Conflicts")).split())
    # Every timer beside it that starts a batch `sohoa aggregate` must be stopped by this unit.
    for timer in sorted(path.parent.glob("*.timer")):
        timer_sections, _ = read_unit(timer)
        unit = (unit_values(timer_sections, "Timer", "Unit") or [timer.stem + ".service"])[0]
        if not (path.parent / unit).is_file():
            continue
        starts = unit_values(read_unit(path.parent / unit)[0], "Service", "ExecStart")
        if starts and sohoa_subcommand(exec_argv(starts[0])[1:]) == "aggregate":
            missing = sorted({timer.name, unit} - conflicts)
            if missing:
                errors.append(f"{where}: needs Conflicts={' '.join(missing)}, so the batch aggregator and "
                              "this one never run together")
    return errors


# =======================================================================================
# The tests
# =======================================================================================

def k8s_yaml_files():
    return sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml"))


def test_every_k8s_yaml_file_parses_and_names_its_objects():
    files = k8s_yaml_files()
    assert len(files) >= 10, files
    errors = []
    for path in files:
        docs = load_docs(path)
        assert docs, f"{rel(path)} is empty"
        for doc in docs:
            if path.name == "kustomization.yaml":
                continue
            if not (isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind")
                    and dig(doc, "metadata", "name")):
                errors.append(f"{rel(path)}: a document without apiVersion, kind and metadata.name")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("kdir", KUSTOMIZE_DIRS, ids=lambda p: rel(p))
def test_kustomization_references_exist(kdir):
    base = render(K8S / "base") if kdir.parent.name == "overlays" else None
    errors = kustomization_errors(kdir, base)
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("kdir", KUSTOMIZE_DIRS, ids=lambda p: rel(p))
def test_rendered_manifests_are_valid(kdir, sohoa):
    objs = render(kdir)
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "PodDisruptionBudget", "Service", "ServiceMonitor", "CronJob", "ConfigMap"} <= kinds
    errors = all_k8s_errors(objs, rel(kdir))
    assert not errors, "\n".join(errors)


def test_standalone_job_manifests_are_valid(sohoa):
    """Files outside the kustomizations (the backfill Job) stand on their own."""
    listed = set()
    for kdir in KUSTOMIZE_DIRS:
        k = load_docs(kdir / "kustomization.yaml")[0]
        listed |= {(kdir / r).resolve() for r in k.get("resources", [])}
        listed |= {(kdir / p["path"]).resolve() for p in k.get("patches", [])}
    standalone = [p for p in k8s_yaml_files() if p.name != "kustomization.yaml" and p.resolve() not in listed]
    assert standalone, "expected the backfill Job outside the kustomizations"
    for path in standalone:
        errors = all_k8s_errors(load_docs(path), rel(path), resolve_config_maps=False)
        assert not errors, "\n".join(errors)
    backfill = [o for p in standalone for o in load_docs(p) if o.get("kind") == "Job"]
    argv = container_argv(all_containers(backfill[0])[0])
    assert sohoa_subcommand(argv) == "ingest" and flag_value(argv, "--from-file") and flag_value(argv, "--out")


def test_the_backfill_job_runs_as_shipped_with_a_read_only_working_directory(sohoa, moto, tmp_path):
    """The Job's exact arguments and environment, its root filesystem read-only (the
    working directory made immutable: root ignores permission bits), against an S3 server
    on 127.0.0.1. Only the export's path (a PersistentVolumeClaim there) and the secrets'
    values are the test's; the S3 endpoint is added, the bucket is the Job's own."""
    job = load_docs(K8S / "jobs" / "backfill-job.yaml")[0]
    container = all_containers(job)[0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    argv = container_argv(container)
    out = flag_value(argv, "--out")
    assert out.startswith("s3://")
    bucket = out[len("s3://"):].split("/")[0]
    endpoint, client = moto
    client.create_bucket(Bucket=bucket)
    export = tmp_path / "export.jsonl"
    good = json.dumps(json.loads((ROOT / "tests/fixtures/dvcqg/samples-envelope.json").read_text()))
    export.write_text(good + "\n" + '{"service":"DongBoHoSoMC","data":[{"MaHoSo":' + "\n")
    args = [str(export) if a == flag_value(argv, "--from-file") else a for a in argv]
    secrets = {"SOHOA_PSEUDONYM_KEY": "0123456789abcdef-job-test-key",
               "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    env = {"PATH": os.environ["PATH"], "SOHOA__STORAGE__OPTIONS__AWS_ENDPOINT": endpoint,
           "SOHOA__STORAGE__OPTIONS__AWS_ALLOW_HTTP": "true", "SOHOA__HTTP__LISTEN": ""}
    for e in container.get("env", []):
        env[e["name"]] = e["value"] if "value" in e else secrets[e["name"]]
    cwd = tmp_path / "readonly"
    cwd.mkdir()
    assert subprocess.run(["chattr", "+i", str(cwd)]).returncode == 0, "chattr +i must work here"
    try:
        r = subprocess.run([sohoa, *args], cwd=cwd, env=env, capture_output=True, text=True)
    finally:
        subprocess.run(["chattr", "-i", str(cwd)])
    assert r.returncode == 0, r.stderr
    assert "1 messages rejected" in r.stderr, r.stderr
    assert not list(cwd.iterdir()), "nothing is written to the working directory"
    prefix = out[len("s3://") + len(bucket) + 1:].strip("/")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    assert any(k.startswith(f"{prefix}/_sohoa/rejects/") and k.endswith(".jsonl") for k in keys), keys
    # The events table, read from the bucket by deltalake: the envelope's three records.
    assert f"{prefix}/events/_delta_log/{1:020}.json" in keys, keys
    table = events_table(f"s3://{bucket}/{prefix}", storage_options={
        "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"})
    assert table.to_pyarrow_dataset().count_rows() == 3
    assert all(u.startswith(f"s3://{bucket}/{prefix}/events/date=") for u in table.file_uris())


def test_overlays_do_what_they_say():
    dev, prod = render(K8S / "overlays" / "dev"), render(K8S / "overlays" / "prod")

    def deployment(objs):
        return next(o for o in objs if o["kind"] == "Deployment")

    def run(objs):
        return next(r for r in sohoa_runs(objs) if r[0]["kind"] == "Deployment")

    assert deployment(dev)["spec"]["replicas"] == 1
    assert deployment(prod)["spec"]["replicas"] == 6
    _, _, _, dev_env, dev_text, _ = run(dev)
    _, prod_c, _, prod_env, prod_text, _ = run(prod)
    dev_docs, prod_docs = [tomllib.loads(dev_text)], [tomllib.loads(prod_text)]
    assert effective_config(dev_docs, dev_env)["privacy"]["development_mode"] is True
    assert effective_config(prod_docs, prod_env)["privacy"]["development_mode"] is False
    assert effective_config(prod_docs, prod_env)["storage"]["root"].startswith("s3://")
    assert prod_env.get("SOHOA_KAFKA_PROP_SECURITY_PROTOCOL") == "SASL_SSL"
    refs = {e["name"]: dig(e, "valueFrom", "secretKeyRef") for e in prod_c["env"] if "valueFrom" in e}
    for var in ("SOHOA_PSEUDONYM_KEY", "SOHOA_KAFKA_PROP_SASL_USERNAME", "SOHOA_KAFKA_PROP_SASL_PASSWORD",
                "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert refs.get(var) and refs[var].get("optional") is not True, var
    spread = deployment(prod)["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {t["topologyKey"] for t in spread} >= {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert quantity(dig(deployment(prod), "spec", "template", "spec", "containers", 0, "resources", "limits", "memory")) \
        > quantity(dig(deployment(dev), "spec", "template", "spec", "containers", 0, "resources", "limits", "memory"))


@pytest.mark.parametrize("kdir", KUSTOMIZE_DIRS, ids=lambda p: rel(p))
def test_sohoa_accepts_the_rendered_configuration(kdir, sohoa, tmp_path):
    """sohoa itself loads each container's config file and environment (exit 2 = bad config)."""
    runs = sohoa_runs(render(kdir))
    assert runs
    seen = set()
    for obj, c, argv, env, text, _ in runs:
        key = (json.dumps(env, sort_keys=True), text)
        if key in seen:
            continue
        seen.add(key)
        cfg = tmp_path / f"sohoa-{len(seen)}.toml"
        cfg.write_text(text or "")
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("SOHOA", "AWS_"))}
        out = subprocess.run([sohoa, "aggregate", "--config", str(cfg), "--root", str(tmp_path / "root"),
                              "--no-report"], env={**clean, **env}, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{name(obj)}: sohoa refused its configuration:\n{out.stderr[-2000:]}"


def test_toml_files_under_deploy_use_real_keys():
    files = [p for p in DEPLOY.rglob("*.toml") if ours(p) and p != BURROW]
    assert len(files) >= 2, files
    errors = []
    for path in files:
        errors += toml_key_errors(tomllib.loads(path.read_text()), rel(path))
    assert not errors, "\n".join(errors)


def deploy_text_files():
    names = (".yaml", ".yml", ".toml", ".service", ".timer", ".example", ".sh", ".env")
    return [p for p in DEPLOY.rglob("*") if p.is_file() and ours(p)
            and (p.suffix in names or p.name == "Containerfile")]


def test_every_sohoa_variable_named_in_deploy_is_real():
    """Every SOHOA_* name in a manifest, unit, env or config file, comments included."""
    errors, seen = [], set()
    for path in deploy_text_files():
        for var in set(re.findall(r"\bSOHOA_[A-Z0-9_]*[A-Z0-9]\b", path.read_text())):
            seen.add(var)
            err = env_name_error(var)
            if err:
                errors.append(f"{rel(path)}: {err}")
    assert not errors, "\n".join(errors)
    assert {"SOHOA_PSEUDONYM_KEY", "SOHOA__KAFKA__BROKERS", "SOHOA__STORAGE__ROOT",
            "SOHOA_KAFKA_PROP_SASL_PASSWORD", "SOHOA_KAFKA_PROP_SECURITY_PROTOCOL"} <= seen


def test_no_secrets_in_deploy():
    errors = []
    for path in k8s_yaml_files():
        for doc in load_docs(path):
            if isinstance(doc, dict) and doc.get("kind") == "Secret":
                errors.append(f"{rel(path)}: a Secret manifest")
        if path.name == "kustomization.yaml" and "secretGenerator" in load_docs(path)[0]:
            errors.append(f"{rel(path)}: secretGenerator")
    example = read_env_file(SYSTEMD / "sohoa.env.example")
    for key, value in example.items():
        if SECRET_ENV.search(key) and value:
            errors.append(f"sohoa.env.example: {key} has a value: leave secrets empty in the example")
    burrow = tomllib.loads(BURROW.read_text())
    for profile, sasl in (burrow.get("sasl") or {}).items():
        if sasl.get("password"):
            errors.append(f"burrow.toml: sasl.{profile}.password is set")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("unit", ["sohoa-ingest@.service", "sohoa-aggregate.service", "sohoa-aggregate.timer",
                                  "sohoa-aggregate-continuous.service"])
def test_systemd_units(unit, sohoa):
    errors = unit_errors(SYSTEMD / unit)
    assert not errors, "\n".join(errors)


def test_systemd_ingest_unit_drains_and_restarts():
    sections, _ = read_unit(SYSTEMD / "sohoa-ingest@.service")
    assert systemd_seconds(unit_values(sections, "Service", "TimeoutStopSec")[0]) * 1000 > \
        effective_config([tomllib.loads((SYSTEMD / "sohoa.toml").read_text())])["shutdown"]["drain_deadline_ms"]
    assert "/etc/sohoa/sohoa.env" in unit_values(sections, "Service", "EnvironmentFile")[0]
    assert unit_values(sections, "Service", "KillSignal") in ([], ["SIGTERM"])
    agg, _ = read_unit(SYSTEMD / "sohoa-aggregate.service")
    assert unit_values(agg, "Service", "Type") == ["oneshot"]
    assert "--metrics-textfile" in unit_values(agg, "Service", "ExecStart")[0]


def test_sohoa_accepts_the_systemd_configuration(sohoa, tmp_path):
    sections, _ = read_unit(SYSTEMD / "sohoa-ingest@.service")
    env = {**read_env_file(SYSTEMD / "sohoa.env.example"), **unit_env(sections)}
    env = {k: v.replace("%i", "9898") for k, v in env.items() if v}
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SOHOA", "AWS_"))}
    out = subprocess.run([sohoa, "aggregate", "--config", str(SYSTEMD / "sohoa.toml"), "--root",
                          str(tmp_path / "root"), "--no-report"], env={**clean, **env},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_containerfile():
    instrs = containerfile_instructions(CONTAINERFILE.read_text())
    froms = [args for i, args in instrs if i == "FROM"]
    assert len(froms) == 2 and froms[0].startswith("rust:") and " AS " in froms[0].upper()
    assert froms[1].startswith("debian:bookworm-slim")
    stage = froms[0].split()[-1]
    runtime = instrs[[i for i, (instr, _) in enumerate(instrs) if instr == "FROM"][1]:]
    build = instrs[:[i for i, (instr, _) in enumerate(instrs) if instr == "FROM"][1]]
    build_runs = " ".join(a for i, a in build if i == "RUN")
    assert "cargo build --release --locked --bin sohoa" in build_runs
    for pkg in ("libssl-dev", "pkg-config", "zlib1g-dev"):
        assert pkg in build_runs
    runtime_runs = " ".join(a for i, a in runtime if i == "RUN")
    assert "libssl3" in runtime_runs and "ca-certificates" in runtime_runs
    assert "-dev" not in runtime_runs, "no build packages in the runtime image"
    assert any(i == "COPY" and f"--from={stage}" in a for i, a in runtime)
    user = [a for i, a in runtime if i == "USER"]
    assert user and user[-1].split(":")[0].isdigit() and user[-1].split(":")[0] != "0", \
        "a numeric non-root USER, so runAsNonRoot can verify it"
    assert ("EXPOSE", "9898") in runtime
    assert image_defaults() == (["/usr/local/bin/sohoa"], ["ingest"])
    for instr, args in build:
        if instr == "COPY" and "--from" not in args:
            for src in args.split()[:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    # Every local crate the build reads: the workspace members and the patched dependencies
    # (third_party/), copied into the image and let through the ignore file.
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())
    local = workspace["workspace"]["members"] + [
        dep["path"] for dep in workspace.get("patch", {}).get("crates-io", {}).values() if "path" in dep]
    assert any(path.startswith("third_party/") for path in local)
    copied = [src for instr, args in build if instr == "COPY" and "--from" not in args
              for src in args.split()[:-1]]
    ignore = (DEPLOY / "Containerfile.dockerignore").read_text().splitlines()
    for path in local:
        assert any(path == src or path.startswith(src.rstrip("/") + "/") for src in copied), \
            f"{path} is not copied into the build stage"
        assert f"!{path.split('/')[0]}/**" in ignore, f"{path} is ignored by the build context"


def test_burrow_config():
    cfg = tomllib.loads(BURROW.read_text())
    group = DEFAULTS["kafka"]["group_id"]
    assert cfg["zookeeper"]["servers"], "Burrow 1.2 refuses to start without ZooKeeper"
    clusters = cfg["cluster"]
    assert clusters and all(c["class-name"] == "kafka" and c["servers"] for c in clusters.values())
    consumers = cfg["consumer"]
    assert consumers
    for c in consumers.values():
        assert c["class-name"] == "kafka" and c["cluster"] in clusters and c["servers"]
        assert re.search(c["group-whitelist"], group), "the whitelist must let the ingestors' group in"
        assert not re.search(c["group-whitelist"], group + "-old")
        assert c.get("client-profile") in cfg["client-profile"]
    for profile in cfg["client-profile"].values():
        # The versions Burrow 1.2.1 knows; anything else makes it panic at start.
        assert profile.get("kafka-version") in ("0.10.2", "0.11.0", "1.0.0", "1.1.0", "2.0.0")
        for ref in ("tls", "sasl"):
            if ref in profile:
                assert profile[ref] in cfg.get(ref, {}), f"client-profile names a missing [{ref}.{profile[ref]}]"
    assert all(h.get("address") for h in cfg["httpserver"].values())
    assert cfg["storage"]["default"]["class-name"] == "inmemory"


@pytest.mark.skipif(shutil.which("Burrow") is None, reason="Debian's burrow package is not installed")
def test_burrow_accepts_the_config(tmp_path):
    """Burrow configures every module, then fails only on reaching ZooKeeper (on loopback)."""
    text = re.sub(r"[a-z0-9-]+(\.[a-z0-9-]+)*\.example", "127.0.0.1", BURROW.read_text())
    text = text.replace("/run/burrow/burrow.pid", str(tmp_path / "burrow.pid"))
    (tmp_path / "burrow.toml").write_text(text)
    out = subprocess.run(["Burrow", "-config-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    log = out.stdout + out.stderr
    assert '"msg":"starting","type":"coordinator","name":"zookeeper"' in log, log[-3000:]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("kdir", KUSTOMIZE_DIRS, ids=lambda p: rel(p))
def test_real_kustomize_agrees(kdir, sohoa):
    """kubectl's kustomize renders the same objects, and they pass the same checks."""
    out = subprocess.run(["kubectl", "kustomize", str(kdir)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    theirs = [d for d in yaml.safe_load_all(out.stdout) if d]
    errors = all_k8s_errors(theirs, f"kubectl kustomize {rel(kdir)}")
    assert not errors, "\n".join(errors)
    hashed = {dig(o, "metadata", "name"): dig(o, "metadata", "name").rsplit("-", 1)[0]
              for o in theirs if o["kind"] == "ConfigMap"}
    text = json.dumps(theirs, sort_keys=True)
    for full, short in hashed.items():
        text = text.replace(f'"{full}"', f'"{short}"')
    theirs = json.loads(text)

    def key(o):
        return (o["kind"], o["metadata"]["name"])

    def normal(o):
        # List order of merged items is not meaningful for these fields.
        o = copy.deepcopy(o)
        for c in all_containers(o):
            c["env"] = sorted(c.get("env", []), key=lambda e: e["name"])
        return o

    mine = {key(o): normal(o) for o in render(kdir)}
    assert {key(o): normal(o) for o in theirs} == mine


# ---------------------------------------------------------------------------------------
# Negative tests: the checkers must catch what they are for
# ---------------------------------------------------------------------------------------

def base_objects():
    return render(K8S / "base")


def the(objs, kind, obj_name=None):
    return next(o for o in objs if o["kind"] == kind and (obj_name is None or o["metadata"]["name"] == obj_name))


def ingestor(objs):
    return the(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def set_env(container, name, **entry):
    container["env"] = [e for e in container["env"] if e["name"] != name] + [{"name": name, **entry}]


BREAKAGES = {
    "probe port not declared": (
        lambda o: ingestor(o)["readinessProbe"]["httpGet"].update(port="http"),
        "is not a declared container port name"),
    "unknown container field": (
        lambda o: ingestor(o).update(imagePullPolicyy="Always"),
        "unknown field imagePullPolicyy"),
    "container without image": (
        lambda o: ingestor(o).pop("image"),
        "missing required field image"),
    "selector does not match the template": (
        lambda o: the(o, "Deployment")["spec"]["selector"]["matchLabels"].update(tier="x"),
        "does not match the template's labels"),
    "PDB selects nothing": (
        lambda o: the(o, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].update(
            {"app.kubernetes.io/component": "ingester"}),
        "matches no Deployment's pods"),
    "Service targets a port name the pods lack": (
        lambda o: the(o, "Service")["spec"]["ports"][0].update(targetPort="prom"),
        "targetPort 'prom' is not a container port"),
    "ServiceMonitor endpoint port unknown": (
        lambda o: the(o, "ServiceMonitor")["spec"]["endpoints"][0].update(port="web"),
        "endpoint port 'web' is not a port name"),
    "old apiVersion": (
        lambda o: the(o, "CronJob").update(apiVersion="batch/v1beta1"),
        "should be batch/v1"),
    "CronJob without schedule": (
        lambda o: the(o, "CronJob")["spec"].pop("schedule"),
        "missing required field schedule"),
    "Indexed Job without completions": (
        lambda o: the(o, "CronJob", "sohoa-aggregate-shards")["spec"]["jobTemplate"]["spec"].pop("completions"),
        "an Indexed Job needs completions"),
    "shard count differs from completions": (
        lambda o: the(o, "CronJob", "sohoa-aggregate-shards")["spec"]["jobTemplate"]["spec"].update(
            completions=8, parallelism=8),
        "N must equal completions"),
    "grace period shorter than the drain": (
        lambda o: the(o, "Deployment")["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=20),
        "is not longer than shutdown.drain_deadline_ms"),
    "drain raised by env past the grace period": (
        lambda o: the(o, "ConfigMap", "sohoa-env")["data"].update(SOHOA__SHUTDOWN__DRAIN_DEADLINE_MS="40000")
        or the(o, "Deployment")["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=40),
        "is not longer than shutdown.drain_deadline_ms (40000 ms)"),
    "literal password": (
        lambda o: set_env(ingestor(o), "SOHOA_KAFKA_PROP_SASL_PASSWORD", value="hunter2"),
        "must come from valueFrom.secretKeyRef"),
    "Secret with data": (
        lambda o: o.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3"},
                            "stringData": {"key": "x"}}),
        "Secret with data"),
    "misspelt config key in env": (
        lambda o: the(o, "ConfigMap", "sohoa-env")["data"].update(SOHOA__FLUSH__MAX_ROWZ="5"),
        "unknown configuration key flush.max_rowz"),
    "unknown sohoa variable": (
        lambda o: set_env(ingestor(o), "SOHOA_KAFKA__BROKERS", value="k:9092"),
        "is not a variable sohoa reads"),
    "misspelt key in the config file": (
        lambda o: the(o, "ConfigMap", "sohoa-config")["data"].update(
            {"sohoa.toml": "[kafka]\nbrokerz = \"k:9092\"\n"}),
        "unknown configuration key kafka.brokerz"),
    "secret in the config file": (
        lambda o: the(o, "ConfigMap", "sohoa-config")["data"].update(
            {"sohoa.toml": "[kafka.properties]\n\"sasl.password\" = \"x\"\n"}),
        "looks like a secret"),
    "unknown sohoa flag": (
        lambda o: ingestor(o).update(args=["ingest", "--config", "/etc/sohoa/sohoa.toml", "--replicas", "3"]),
        "has no flag --replicas"),
    "unknown sohoa subcommand": (
        lambda o: ingestor(o).update(args=["ingestor"]),
        "is not a sohoa subcommand"),
    "JOB_COMPLETION_INDEX outside an Indexed Job": (
        lambda o: the(o, "CronJob", "sohoa-aggregate")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        ["containers"][0].update(args=["aggregate", "--shard", "$(JOB_COMPLETION_INDEX)/4"]),
        "JOB_COMPLETION_INDEX exists only in Indexed Jobs"),
    "missing ConfigMap": (
        lambda o: o.remove(the(o, "ConfigMap", "sohoa-env")),
        "ConfigMap sohoa-env is not among the rendered objects"),
    "writable root filesystem": (
        lambda o: ingestor(o)["securityContext"].update(readOnlyRootFilesystem=False),
        "readOnlyRootFilesystem true"),
}


def test_the_unbroken_base_passes(sohoa):
    """The baseline for the breakages below: no false alarm on the real base."""
    assert all_k8s_errors(base_objects(), "base") == []


def assert_breakage_caught(objs, breakage, tmp_path):
    """A breakage, written to a file and read back as a manifest, is reported."""
    mutate, expected = breakage
    mutate(objs)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all(objs))
    errors = all_k8s_errors(load_docs(path), "broken")
    assert any(expected in e for e in errors), f"expected {expected!r} among:\n" + "\n".join(errors)


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_checker_catches(breakage, tmp_path, sohoa):
    assert_breakage_caught(base_objects(), BREAKAGES[breakage], tmp_path)


def test_kustomization_checker_catches_missing_files_and_targets(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["deployment.yaml"],
        "patches": [{"path": "patch.yaml"}, {"path": "gone.yaml"}],
        "configMapGenerator": [{"name": "c", "files": ["nope.toml"]}],
        "secretGenerator": [{"name": "s", "literals": ["password=x"]}],
        "patchesStrategicMerge": ["patch.yaml"],
    }))
    (tmp_path / "patch.yaml").write_text(yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "sohoa-ingester"}}))
    errors = kustomization_errors(tmp_path, base_objects())
    for expected in ("resource deployment.yaml does not exist", "patch gone.yaml does not exist",
                     "file nope.toml does not exist", "secretGenerator", "patchesStrategicMerge",
                     "patches Deployment/sohoa-ingester, which the base does not have"):
        assert any(expected in e for e in errors), f"{expected!r} not in {errors}"
    (tmp_path / "patch.yaml").write_text(yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "sohoa-ingestor"},
        "spec": {"template": {"spec": {"containers": [{"name": "ingester", "resources": {}}]}}}}))
    errors = kustomization_errors(tmp_path, base_objects())
    assert any("container ingester is not in Deployment/sohoa-ingestor" in e for e in errors), errors
    with pytest.raises(RenderError, match="does not implement"):
        render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({"resources": ["deployment.yaml"]}))
    with pytest.raises(RenderError, match="resource deployment.yaml does not exist"):
        render(tmp_path)


def test_toml_checker_catches_unknown_keys_and_types():
    doc = tomllib.loads('[flush]\nmax_rowz = 5\nmax_rows = "many"\n[[topics]]\nname = "t"\ncodec = "x"\n'
                        '[kafka.properties]\n"fetch.max.bytes" = 5\n[aggregate.scorecard]\n'
                        'on_time = { points = 20, full_att = 1.0 }\n')
    errors = "\n".join(toml_key_errors(doc, "t.toml"))
    for expected in ("unknown configuration key flush.max_rowz", "flush.max_rows must be int, not str",
                     "unknown configuration key topics.0.codec", "values of [kafka.properties] are strings",
                     "unknown configuration key aggregate.scorecard.on_time.full_att"):
        assert expected in errors
    assert toml_key_errors(tomllib.loads('[aggregate.scorecard]\non_time = { points = 20, full_at = 1 }\n'), "t") == []


def test_env_name_checker():
    assert env_name_error("SOHOA__KAFKA__BROKERS") is None
    assert env_name_error("SOHOA__KAFKA__PROPERTIES__FETCH") is None
    assert env_name_error("SOHOA__STORAGE__OPTIONS__AWS_REGION") is None
    assert env_name_error("SOHOA__AGGREGATE__SCORECARD__ON_TIME__POINTS") is None
    assert env_name_error("SOHOA_KAFKA_PROP_SSL_CA_LOCATION") is None
    assert env_name_error("AWS_REGION") is None
    assert "unknown configuration key" in env_name_error("SOHOA__KAFKA__BROKER")
    assert "is a table" in env_name_error("SOHOA__FLUSH")
    assert "array of tables" in env_name_error("SOHOA__TOPICS")
    assert "is a value, not a table" in env_name_error("SOHOA__FLUSH__MAX_ROWS__X")
    assert "managed by sohoa" in env_name_error("SOHOA_KAFKA_PROP_GROUP_ID")
    assert "not a variable sohoa reads" in env_name_error("SOHOA_CRASH_AT")


def test_unit_checker_catches_short_stop_timeout_and_typos(tmp_path, sohoa):
    unit = (SYSTEMD / "sohoa-ingest@.service").read_text()
    for f in ("sohoa.toml", "sohoa.env.example"):
        shutil.copy(SYSTEMD / f, tmp_path / f)
    broken = (unit.replace("TimeoutStopSec=60", "TimeoutStopSec=20s")
              .replace("Restart=on-failure", "Restart=always")
              .replace("ProtectSystem=strict", "ProtectSytem=strict")
              .replace("ingest --config", "ingest --in-file x --config")
              .replace("Environment=SOHOA__HTTP__LISTEN", "Environment=SOHOA__HTTP__LISTENER"))
    (tmp_path / "sohoa-ingest@.service").write_text(broken)
    errors = "\n".join(unit_errors(tmp_path / "sohoa-ingest@.service", config_dir=tmp_path))
    for expected in ("stop timeout 20 s is not longer than shutdown.drain_deadline_ms (30000 ms)",
                     "needs Restart=on-failure", "ProtectSytem= is not a directive", "needs ProtectSystem=strict",
                     "has no flag --in-file", "unknown configuration key http.listener"):
        assert expected in errors, f"{expected!r} not in:\n{errors}"
    (tmp_path / "sohoa.toml").write_text("[shutdown]\ndrain_deadline_ms = 40000\n")
    (tmp_path / "sohoa-ingest@.service").write_text(unit.replace("TimeoutStopSec=60", "TimeoutStopSec=40s"))
    errors = "\n".join(unit_errors(tmp_path / "sohoa-ingest@.service", config_dir=tmp_path))
    assert "stop timeout 40 s is not longer than shutdown.drain_deadline_ms (40000 ms)" in errors
    (tmp_path / "x.timer").write_text("[Unit]\nDescription=x\n[Timer]\nOnCalender=hourly\n")
    errors = "\n".join(unit_errors(tmp_path / "x.timer"))
    assert "OnCalender= is not a directive" in errors and "needs OnCalendar=" in errors
    assert "x.service, which is not beside it" in errors
    (tmp_path / "garbage.service").write_text("[Unit\nDescription\n")
    assert any("does not parse" in e for e in unit_errors(tmp_path / "garbage.service"))


def test_systemd_time_spans():
    assert systemd_seconds("60") == 60 and systemd_seconds("90s") == 90
    assert systemd_seconds("1min 30s") == 90 and systemd_seconds("2m") == 120
    with pytest.raises(ValueError):
        systemd_seconds("1 fortnight")


# ---------------------------------------------------------------------------------------
# Continuous aggregation: the continuous overlay and the continuous systemd unit
# ---------------------------------------------------------------------------------------

CONTINUOUS = K8S / "overlays" / "continuous"


def continuous_objects():
    return render(CONTINUOUS)


def aggregator(objs):
    return the(objs, "Deployment", "sohoa-aggregator")


def aggregator_container(objs):
    return aggregator(objs)["spec"]["template"]["spec"]["containers"][0]


def test_continuous_overlay_is_prod_with_a_continuous_aggregator():
    prod, cont = render(K8S / "overlays" / "prod"), continuous_objects()
    key = {(o["kind"], o["metadata"]["name"]): o for o in cont}
    prod_key = {(o["kind"], o["metadata"]["name"]): o for o in prod}
    added = {("Deployment", "sohoa-aggregator"), ("Service", "sohoa-aggregator"),
             ("ServiceMonitor", "sohoa-aggregator")}
    # Prod's objects, unchanged, but for the hourly CronJob; and the three added.
    assert set(key) == set(prod_key) - {("CronJob", "sohoa-aggregate")} | added
    for k in set(key) - added:
        assert key[k] == prod_key[k], k
    deployment = aggregator(cont)
    argv = container_argv(aggregator_container(cont))
    assert sohoa_subcommand(argv) == "aggregate" and "--incremental" in argv
    assert flag_value(argv, "--every") == "1m" and flag_value(argv, "--listen") == "0.0.0.0:9899"
    assert flag_value(argv, "--config") == "/etc/sohoa/sohoa.toml"
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    # The hourly CronJob's pod, as prod patches it: the same Secrets, environment, volumes,
    # security context, image and sizing.
    cron = the(prod, "CronJob", "sohoa-aggregate")
    cron_pod = pod_template(cron)["spec"]
    pod = deployment["spec"]["template"]["spec"]
    for field in ("securityContext", "automountServiceAccountToken", "volumes"):
        assert pod[field] == cron_pod[field], field
    c, cron_c = aggregator_container(cont), cron_pod["containers"][0]
    for field in ("image", "imagePullPolicy", "envFrom", "env", "resources", "securityContext", "volumeMounts"):
        assert c[field] == cron_c[field], field
    assert c["image"] == ingestor(cont)["image"] == ingestor(prod)["image"]
    assert {o["metadata"]["namespace"] for o in cont} == {o["metadata"]["namespace"] for o in prod} == {"sohoa"}
    # Scraped as the job the aggregator alert rules are written for: the ServiceMonitor's
    # job label is the name of the Service it selects (it sets no jobLabel).
    service, monitor = the(cont, "Service", "sohoa-aggregator"), the(cont, "ServiceMonitor", "sohoa-aggregator")
    assert 'job="sohoa-aggregator"' in (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert "jobLabel" not in monitor["spec"]
    assert [s for s in cont if s["kind"] == "Service"
            and matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])] == [service]
    assert [o for o in cont if pod_template(o) is not None
            and matches(service["spec"]["selector"], pod_template(o)["metadata"]["labels"])] == [deployment]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert service["spec"]["ports"][0]["port"] == 9899


def test_continuous_aggregator_serves_what_the_alerts_read(sohoa, tmp_path):
    """The Deployment's own command, on a local root, serves /readyz and every
    sohoa_aggregate_* series the alert rules read."""
    import socket
    import time
    import urllib.request

    cont = continuous_objects()
    obj, c, argv, env, text, _ = next(r for r in sohoa_runs(cont) if r[0] is aggregator(cont))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "sohoa.toml"
    cfg.write_text(text)
    argv = [str(cfg) if a == flag_value(argv, "--config") else a for a in argv]
    argv = [f"127.0.0.1:{port}" if a == flag_value(argv, "--listen") else a for a in argv]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SOHOA", "AWS_"))}
    proc = subprocess.Popen([sohoa] + argv + ["--root", str(tmp_path / "root"), "--no-report"],
                            env={**clean, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, ready = time.monotonic() + 60, False
        while time.monotonic() < deadline and not ready and proc.poll() is None:
            try:
                ready = urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200
            except OSError:
                time.sleep(0.2)
        assert ready, f"/readyz never answered 200 (exit {proc.poll()})"
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200
        served = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-2000:]
    wanted = set(re.findall(r"\bsohoa_aggregate_[a-z_]+", (DEPLOY / "prometheus" / "alerts.yml").read_text()))
    assert "sohoa_aggregate_newest_event_timestamp_seconds" in wanted
    names = set(re.findall(r"(?m)^(sohoa_aggregate_[a-z_]+)", served))
    assert wanted <= names, f"alerts.yml reads {sorted(wanted - names)}, which the aggregator does not serve"


CONTINUOUS_BREAKAGES = {
    "hourly CronJob left beside it": (
        lambda o: o.append(the(base_objects(), "CronJob", "sohoa-aggregate")),
        "would run `sohoa aggregate` alongside the continuous Deployment/sohoa-aggregator"),
    "two replicas": (
        lambda o: aggregator(o)["spec"].update(replicas=2),
        "runs one replica, not 2"),
    "rolling update": (
        lambda o: aggregator(o)["spec"].update(strategy={"type": "RollingUpdate"}),
        "needs strategy Recreate"),
    "misspelt flag": (
        lambda o: aggregator_container(o).update(
            args=[a.replace("--every", "--everyy") for a in aggregator_container(o)["args"]]),
        "has no flag --everyy"),
    "no --every": (
        lambda o: aggregator_container(o).update(args=["aggregate", "--config", "/etc/sohoa/sohoa.toml"]),
        "a Deployment runs `sohoa ingest` (Kafka) or `sohoa aggregate --every`"),
    "listen port not declared": (
        lambda o: aggregator_container(o).update(
            args=[a.replace("9899", "9900") for a in aggregator_container(o)["args"]]),
        "--listen 0.0.0.0:9900: its port is not a containerPort"),
    "listen on loopback": (
        lambda o: aggregator_container(o).update(
            args=[a.replace("0.0.0.0", "127.0.0.1") for a in aggregator_container(o)["args"]]),
        "is loopback"),
    "Service also selects the sharded CronJobs' pods": (
        lambda o: the(o, "Service", "sohoa-aggregator")["spec"]["selector"].pop("app.kubernetes.io/instance"),
        "targetPort 'metrics' is not a container port of CronJob/sohoa-aggregate-shards"),
    "readiness on /healthz": (
        lambda o: aggregator_container(o)["readinessProbe"]["httpGet"].update(path="/healthz"),
        "readinessProbe must GET /readyz"),
}


def test_the_unbroken_continuous_overlay_passes(sohoa):
    assert all_k8s_errors(continuous_objects(), "continuous") == []


@pytest.mark.parametrize("breakage", sorted(CONTINUOUS_BREAKAGES))
def test_checker_catches_in_continuous(breakage, tmp_path, sohoa):
    assert_breakage_caught(continuous_objects(), CONTINUOUS_BREAKAGES[breakage], tmp_path)


def test_render_deletes_objects_and_refuses_other_directives(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [str(K8S / "base")], "patches": [{"path": "patch.yaml"}]}))
    patch = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "sohoa-compact"}, "$patch": "delete"}
    (tmp_path / "patch.yaml").write_text(yaml.safe_dump(patch))
    kinds = {(o["kind"], o["metadata"]["name"]) for o in render(tmp_path)}
    assert ("CronJob", "sohoa-compact") not in kinds and ("CronJob", "sohoa-aggregate") in kinds
    patch.update({"$patch": "replace"})
    (tmp_path / "patch.yaml").write_text(yaml.safe_dump(patch))
    with pytest.raises(RenderError, match="does not implement"):
        render(tmp_path)
    patch.pop("$patch")
    patch["spec"] = {"jobTemplate": {"spec": {"template": {"spec": {"volumes": [{"name": "tmp", "$patch": "delete"}]}}}}}
    (tmp_path / "patch.yaml").write_text(yaml.safe_dump(patch))
    with pytest.raises(RenderError, match="does not implement"):
        render(tmp_path)


def test_systemd_continuous_unit_replaces_the_timer():
    cont, _ = read_unit(SYSTEMD / "sohoa-aggregate-continuous.service")
    batch, _ = read_unit(SYSTEMD / "sohoa-aggregate.service")
    argv = exec_argv(unit_values(cont, "Service", "ExecStart")[0])
    assert sohoa_subcommand(argv[1:]) == "aggregate" and "--incremental" in argv
    assert flag_value(argv, "--every") == "1m" and flag_value(argv, "--listen") == "127.0.0.1:9899"
    assert flag_value(argv, "--config") == flag_value(exec_argv(unit_values(batch, "Service", "ExecStart")[0]), "--config")
    assert set(" ".join(unit_values(cont, "Unit", "Conflicts")).split()) >= {"sohoa-aggregate.timer",
                                                                             "sohoa-aggregate.service"}
    assert unit_values(cont, "Install", "WantedBy") == ["multi-user.target"]
    # The batch service's environment, user, sandbox and memory limit, directive for
    # directive; only what makes it a one-shot that writes a textfile differs.
    oneshot_only = {"Type", "ExecStart", "TimeoutStartSec", "RuntimeDirectory", "RuntimeDirectoryMode",
                    "RuntimeDirectoryPreserve"}
    for key in {k for k, _ in batch["Service"]} - oneshot_only:
        assert unit_values(cont, "Service", key) == unit_values(batch, "Service", key), key


def test_unit_checker_catches_a_continuous_unit_beside_the_timer(tmp_path, sohoa):
    for f in ("sohoa.toml", "sohoa.env.example", "sohoa-aggregate.service", "sohoa-aggregate.timer"):
        shutil.copy(SYSTEMD / f, tmp_path / f)
    unit = (SYSTEMD / "sohoa-aggregate-continuous.service").read_text()
    path = tmp_path / "sohoa-aggregate-continuous.service"
    path.write_text(unit)
    assert unit_errors(path, config_dir=tmp_path) == []
    path.write_text(unit.replace("Conflicts=sohoa-aggregate.timer ", "Conflicts=")
                    .replace("Type=exec", "Type=oneshot").replace("Restart=on-failure", "Restart=no")
                    .replace(" --listen 127.0.0.1:9899", "").replace("--every", "--everyy"))
    errors = "\n".join(unit_errors(path, config_dir=tmp_path))
    assert "has no flag --everyy" in errors
    path.write_text(unit.replace("Conflicts=sohoa-aggregate.timer ", "Conflicts=")
                    .replace("Type=exec", "Type=oneshot").replace("Restart=on-failure", "Restart=no")
                    .replace(" --listen 127.0.0.1:9899", ""))
    errors = "\n".join(unit_errors(path, config_dir=tmp_path))
    for expected in ("needs Conflicts=sohoa-aggregate.timer,", "Type=exec (or simple), not ['oneshot']",
                     "needs Restart=on-failure", "needs --listen"):
        assert expected in errors, f"{expected!r} not in:\n{errors}"
