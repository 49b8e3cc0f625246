"""Targets by name: ``load("model")``, ``load("builtin", home=...)`` and ``load("builtin-processes", home=...)``
(the reference CSP, in one process or with the app side in a child process; ``token="pkcs11"`` puts its hardware
keys on a PKCS#11 token, see docs/hardware.md; ``durable=False`` makes a scratch installation, nothing fsynced;
``remove_home=True`` removes the home when the target closes).

``capi`` is a real CryptoAPI provider through the CAPI bridge (under Wine off Windows; docs/targets.md):
``load("capi", provider=..., provider_type=...)``, or as a spec ``capi:<provider name>[:<provider type>]``
(``capi:Microsoft Enhanced Cryptographic Provider v1.0:1``). ``line:<command>`` runs any program speaking the
line protocol. ``python:package.module:factory`` calls ``factory()`` from an importable module and returns its
Target. ``mutant:<name>`` is the built-in CSP with one planted defect from the fault catalog
(``keyhandoff.mutants``), in a private temporary home unless ``home=`` is given: a target the check must fail.
"""

from __future__ import annotations

import importlib
import os
import shlex
from collections.abc import Mapping

from keyhandoff.target import Target, TargetUnavailable, UnknownTarget, missing_methods

__all__ = ["SPECS", "TargetUnavailable", "UnknownTarget", "is_spec", "load"]

SPECS = (
    "model",
    "builtin",
    "builtin-processes",
    "capi",
    "capi:<provider>[:<type>]",
    "line:<command>",
    "python:package.module:factory",
    "mutant:<name>",
)


def is_spec(spec: str) -> bool:
    """Whether ``spec`` has the form of a target spec :func:`load` takes (whether it loads here is another
    matter)."""
    return spec in ("model", "builtin", "builtin-processes", "capi") or spec.startswith(
        ("capi:", "line:", "python:", "mutant:")
    )


_BUILTIN_OPTIONS = frozenset({"home", "token", "durable", "remove_home"})


def _options_of(kind: str, options: Mapping[str, object], known: frozenset[str]) -> None:
    """TypeError for an option ``kind`` does not take: a misspelt ``home`` would otherwise be ignored, and the
    target opened in the user's own installation."""
    unknown = sorted(set(options) - known)
    if unknown:
        takes = f"takes {', '.join(sorted(known))}" if known else "takes no options"
        raise TypeError(f"load({kind!r}) {takes}, not {', '.join(unknown)}")


def load(spec: str, **options: object) -> Target:
    """A Target from a spec string, with the options its kind takes (see the module's docstring): ``model``
    ``seed``; ``builtin`` and ``builtin-processes`` ``home``, ``token``, ``durable``, ``remove_home``; ``capi``
    ``provider``, ``provider_type``; ``mutant:<name>`` ``home``; ``line:`` none; ``python:`` whatever its factory
    takes. A spec that names no target raises :class:`UnknownTarget` (a ValueError) naming the known ones; an
    option the kind does not take, or of the wrong type, TypeError; a target that cannot be started here
    :class:`TargetUnavailable`, saying why."""
    if spec == "model":
        from keyhandoff.targets.model_target import ModelTarget

        _options_of(spec, options, frozenset({"seed"}))
        seed = options.get("seed")
        if seed is not None and (type(seed) is not int):
            raise TypeError("the model target's seed is an int")
        return ModelTarget(seed=seed)
    if spec in ("builtin", "builtin-processes"):
        _options_of(spec, options, _BUILTIN_OPTIONS)
        from keyhandoff.targets.builtin_target import BuiltinTarget

        home = options.get("home")
        if home is not None and not isinstance(home, str | os.PathLike):
            raise TypeError("the builtin target's home is a directory path")
        token = options.get("token")
        if token is not None and not isinstance(token, str):
            raise TypeError("the builtin target's token is 'sqlite' or 'pkcs11'")
        durable = options.get("durable", True)
        if not isinstance(durable, bool):
            raise TypeError("the builtin target's durable is True or False")
        from keyhandoff.impl.installation import InstallationError

        remove_home = options.get("remove_home", False)
        if not isinstance(remove_home, bool):
            raise TypeError("the builtin target's remove_home is True or False")
        try:
            return BuiltinTarget(
                home, processes=spec == "builtin-processes", token=token, durable=durable, remove_home=remove_home
            )
        except InstallationError as exc:  # a home that is no directory, a secret or token that cannot be used
            raise TargetUnavailable(f"{spec!r}: {exc}") from exc
    if spec == "capi" or spec.startswith("capi:"):
        from keyhandoff.targets.capi_target import CapiTarget
        from keyhandoff.targets.line_target import PeerError

        _options_of("capi", options, frozenset({"provider", "provider_type"}))
        provider, provider_type = options.get("provider"), options.get("provider_type")
        if spec != "capi":
            name, _, kind = spec.removeprefix("capi:").rpartition(":")
            provider, provider_type = (name, int(kind)) if name and kind.isdigit() else (spec[5:], provider_type)
            if not provider:
                raise UnknownTarget("a capi target is written capi:<provider name>[:<provider type>]")
        if provider is not None and not isinstance(provider, str):
            raise TypeError("the capi target's provider is a provider name")
        if provider_type is not None and not isinstance(provider_type, int):
            raise TypeError("the capi target's provider_type is an integer (PROV_RSA_AES is 24)")
        try:
            return CapiTarget(provider, provider_type)
        except PeerError as exc:  # the bridge started but could not open the provider (its answer to hello)
            raise TargetUnavailable(f"{spec!r}: {exc}") from exc
    if spec.startswith("line:"):
        from keyhandoff.targets.line_target import LineTarget, PeerError

        try:
            argv = shlex.split(spec.removeprefix("line:"))
        except ValueError as exc:  # an unclosed quote
            raise UnknownTarget(f"{spec!r}: {exc}") from None
        if not argv:
            raise UnknownTarget("a line target is written line:<command and arguments>")
        _options_of("line:", options, frozenset())
        try:
            return LineTarget(argv)
        except OSError as exc:  # the program is not there, or not executable
            raise TargetUnavailable(f"{spec!r}: cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
        except PeerError as exc:  # it started, but does not answer hello in the line protocol
            raise TargetUnavailable(f"{spec!r}: {exc}") from exc
    if spec.startswith("python:"):
        module_name, _, factory_name = spec.removeprefix("python:").partition(":")
        if not module_name or not factory_name:
            raise UnknownTarget("a python target is written python:package.module:factory")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # the user's module, not importable from here (sys.path, a typo)
            raise TargetUnavailable(f"{spec!r}: cannot import {module_name!r}: {exc}") from exc
        factory = getattr(module, factory_name, None)
        if not callable(factory):
            raise TargetUnavailable(f"{spec!r}: {module_name} has no callable {factory_name!r}")
        target = factory(**options)  # an exception here is the factory's own: its traceback helps its author
        if not isinstance(target, Target):
            raise TargetUnavailable(
                f"{spec!r}: {factory_name}() returned a value of type {type(target).__name__}, which has no "
                f"{', '.join(missing_methods(target))} (see keyhandoff.target.Target)"
            )
        return target
    if spec.startswith("mutant:"):
        from keyhandoff.mutants import by_name
        from keyhandoff.targets.fresh import temporary_home

        try:
            mutant = by_name(spec.removeprefix("mutant:"))
        except ValueError as exc:
            raise UnknownTarget(str(exc)) from None
        _options_of("mutant:", options, frozenset({"home"}))
        home = options.get("home")
        if home is not None and not isinstance(home, str | os.PathLike):
            raise TypeError("a mutant's home is a directory path")
        return mutant.factory(home if home is not None else temporary_home())  # never the user's installation
    raise UnknownTarget(f"unknown target {spec!r}; known: {', '.join(SPECS)}")
