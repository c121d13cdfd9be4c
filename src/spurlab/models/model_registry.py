"""The models registry: every network spurlab can train, chosen by name, factory or module.

Wherever a model is chosen (``Audit``, ``get_method(..., model=...)``, ``spurlab train``,
``spurlab audit``, the critical-neurons and failure-directions studies), ``model`` is one of

* a registered name: ``auto`` (a CNN on images, else an MLP), ``linear``, ``mlp``, ``cnn``,
  ``flatcnn``, ``resnet`` (spurlab's small ResNet), ``efficientnet-lite0`` (ImageNet weights
  shipped offline by the ``embedders`` extra), and whatever else is registered;
* ``torchvision:<arch>`` or ``timm:<name>`` (the ``torchvision`` / ``timm`` extras, imported lazily);
* a factory ``(input_shape, n_classes) -> nn.Module`` that spurlab trains;
* an ``nn.Module`` that is already trained: audited as it is, the starting point of methods;
* a :class:`ModelSpec` bundling one of these with ``pretrained``, ``freeze`` (``"none"`` or
  ``"backbone"``: train the head only), ``feature_layer`` (see :mod:`spurlab.models.penultimate`)
  and builder options (``hidden``, ``channels``, ``image_size``, ...).

Register a network the way datasets and methods are registered::

    from spurlab.models.model_registry import register_model

    @register_model("lenet", "LeNet-5: two conv + pool blocks, three linear layers", inputs="images")
    def build_lenet(input_shape, n_classes, pretrained=False):
        return LeNet(input_shape[0], n_classes)     # with features(x) and a linear head

Built-in entries live in the modules of ``MODEL_MODULES``; a plug-in module named in
``$SPURLAB_PLUGINS`` registers its own the same way.
"""
from __future__ import annotations

import copy
import importlib
import inspect
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from spurlab.errors import SpurlabError, UnknownNameError
from spurlab.models.penultimate import check_features
from spurlab.params import Options, check_param
from spurlab.registry import Registry

FREEZE_MODES = ("none", "backbone")
LENET_MIN_SIZE = 12  # images at least this many pixels a side get LeNet under model="auto"
MODEL_OPTIONS = ("pretrained", "freeze", "feature_layer")
# Library prefixes (``torchvision:<arch>``): the pip extra that provides each library.
PREFIX_EXTRAS = {"torchvision": "spurlab[torchvision]", "timm": "spurlab[timm]"}
# The modules whose import registers the built-in networks (a LeNet module goes here too).
MODEL_MODULES = ["spurlab.models.nets", "spurlab.models.convnets", "spurlab.models.backbones"]
# builder(name_after_prefix, input_shape, n_classes, pretrained) per prefix, registered by backbones.py
PREFIX_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]  # builder(input_shape, n_classes, pretrained=..., **options)
    summary: str
    inputs: str = "any"  # "any" | "images" (C, H, W)
    pretrained_default: bool = False

    def options(self) -> dict[str, Any]:
        """The builder's options and their defaults (besides input_shape, n_classes, pretrained)."""
        params = inspect.signature(self.builder).parameters.values()
        return {p.name: (None if p.default is p.empty else p.default) for p in params
                if p.name not in ("input_shape", "n_classes", "pretrained") and p.kind is not p.VAR_KEYWORD}


MODELS: Registry[ModelEntry] = Registry("model", MODEL_MODULES)


def no_pretrained_weights(name: str, pretrained: bool) -> None:
    """For builders of networks spurlab has no pretrained weights for."""
    if pretrained:
        raise SpurlabError(f"spurlab has no pretrained weights for model {name!r}",
                           hint="pretrained weights: efficientnet-lite0, torchvision:<arch>, timm:<name>")


def register_model(name: str, summary: str, inputs: str = "any", pretrained_default: bool = False):
    """Decorator registering ``builder(input_shape, n_classes, pretrained=False, **options) -> nn.Module``.

    The module it returns should follow the penultimate-features convention (a ``features(x)``
    method and a linear ``head``) so that DFR, failure directions and the units step can use it.
    """
    if inputs not in ("any", "images"):
        raise ValueError(f"inputs must be 'any' or 'images', got {inputs!r}")

    def decorate(builder: Callable[..., nn.Module]):
        MODELS.add(name, ModelEntry(name, builder, summary, inputs, pretrained_default), origin=builder.__module__)
        return builder

    return decorate


def model_names() -> list[str]:
    """``auto``, every registered name, then the library prefixes (``torchvision:<arch>``, ``timm:<name>``)."""
    return ["auto", *MODELS.names(), *(f"{p}:<name>" for p in PREFIX_EXTRAS)]


def model_help() -> str:
    """One line for command-line help."""
    return (f"{', '.join(model_names())}; or a TorchScript file (torch.jit.save) or pkg.module:factory "
            "(options: --set pretrained=, freeze=none|backbone, feature_layer=)")


def resolve_model_name(model: str, input_shape: tuple[int, ...]) -> str:
    """``auto`` (the one place it is decided): LeNet on images (C, H, W) of at least ``LENET_MIN_SIZE``
    pixels a side, the small CNN on smaller images, an MLP on vectors. Other names are checked."""
    if model == "auto":
        if len(input_shape) != 3:
            return "mlp"
        # LeNet's flattened map keeps an object's shape in its 84 features (what DFR retrains on);
        # the small CNN's global pooling keeps little besides a background colour.
        return "lenet" if min(input_shape[1:]) >= LENET_MIN_SIZE and "lenet" in MODELS else "cnn"
    prefix = model.split(":", 1)[0] if ":" in model else None
    if prefix in PREFIX_EXTRAS:
        return model
    if model not in MODELS:
        raise UnknownNameError("model", model, model_names())
    return model


# ------------------------------------------------------------------ the choice of a model
@dataclass(frozen=True)
class ModelSpec:
    """A model choice and its options; :meth:`build` makes a fresh network for a task.

    ``pretrained=None`` means the entry's default (``efficientnet-lite0``: True, others: False).
    """

    model: Union[str, Callable[..., nn.Module], nn.Module] = "auto"
    pretrained: bool | None = None
    freeze: str = "none"
    feature_layer: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_param("ModelSpec", "freeze", Options(*FREEZE_MODES), self.freeze)  # backbone: the last layer trains
        if not isinstance(self.model, (str, nn.Module)) and not callable(self.model):
            raise SpurlabError(f"model must be a name, a factory (input_shape, n_classes) -> nn.Module or an "
                               f"nn.Module, got {type(self.model).__name__}")
        if self.options and not isinstance(self.model, str):
            raise SpurlabError(f"builder options {sorted(self.options)} only apply to registered model names",
                               hint="pass them to your own factory yourself")

    @property
    def kind(self) -> str:
        """``name``, ``module`` (an already trained network) or ``factory``."""
        if isinstance(self.model, str):
            return "name"
        return "module" if isinstance(self.model, nn.Module) else "factory"

    @property
    def label(self) -> str:
        """How reports name the model."""
        if self.kind == "name":
            return str(self.model) + (" (frozen backbone)" if self.freeze == "backbone" else "")
        if self.kind == "module":
            return f"your model ({getattr(self.model, 'original_name', type(self.model).__name__)})"
        return f"your factory ({getattr(self.model, '__module__', '?')}.{getattr(self.model, '__qualname__', '?')})"

    @property
    def frozen(self) -> bool:
        return self.freeze == "backbone"

    def resolve(self, input_shape: tuple[int, ...]) -> ModelSpec:
        """``auto`` made concrete for inputs of ``input_shape``; names checked."""
        if self.kind != "name":
            return self
        return replace(self, model=resolve_model_name(str(self.model), tuple(input_shape)))

    def build(self, input_shape: tuple[int, ...], n_classes: int, seed: int = 0) -> nn.Module:
        """A network for inputs ``input_shape`` and ``n_classes`` classes (a copy of a given module)."""
        input_shape = tuple(int(s) for s in input_shape)
        torch.manual_seed(seed)
        if self.kind == "module":
            net = copy_module(self.model)
        elif self.kind == "factory":
            net = call_factory(self.model, input_shape, n_classes)
        else:
            net = build_named(self.resolve(input_shape).model, input_shape, n_classes, self.pretrained,
                              **self.options)
        if self.feature_layer or self.frozen:
            check_features(net, self.feature_layer)
        return net

    def cache_token(self) -> dict[str, Any]:
        """What, besides the weights, changes the features a built model computes (its transform)."""
        name = self.model if self.kind == "name" else self.label
        return {"model": str(name), "feature_layer": self.feature_layer, "options": dict(sorted(self.options.items()))}


def copy_module(module: nn.Module) -> nn.Module:
    """An independent copy; a TorchScript module through save/load (its deep copy has non-leaf parameters)."""
    if isinstance(module, torch.jit.ScriptModule):
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(module, buffer)
            buffer.seek(0)
            return torch.jit.load(buffer, map_location="cpu")
    return copy.deepcopy(module)


def as_model_spec(model: Any = "auto", **options: Any) -> ModelSpec:
    """``model`` (a name, factory, module or :class:`ModelSpec`) with ``options`` layered over it.

    ``pretrained``, ``freeze`` and ``feature_layer`` are the spec's own fields; any other
    option goes to the named model's builder.
    """
    options = {k: v for k, v in options.items() if v is not None}
    own = {k: options.pop(k) for k in MODEL_OPTIONS if k in options}
    if isinstance(model, str) and model != "auto" and _names_a_file(model):
        model = load_model_file(model)
    if isinstance(own.get("pretrained"), str):
        own["pretrained"] = own["pretrained"].lower() in ("1", "true", "yes")
    if isinstance(model, ModelSpec):
        return replace(model, **own, options={**model.options, **options})
    return ModelSpec(model, **own, options=options)


def split_model_options(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--set`` items -> (model options, the rest): ``pretrained``, ``freeze``, ``feature_layer`` and
    ``model.KEY`` (a builder option such as ``model.image_size``) go to the model."""
    model, rest = {}, {}
    for key, value in params.items():
        if key in MODEL_OPTIONS:
            model[key] = value
        elif key.startswith("model."):
            model[key[len("model."):]] = value
        else:
            rest[key] = value
    return model, rest


def _names_a_file(text: str) -> bool:
    """A TorchScript file or ``pkg.module:factory`` (not a registered name or a library prefix)."""
    if ":" in text:
        return text.split(":", 1)[0] not in PREFIX_EXTRAS
    return text not in MODELS and Path(text).expanduser().is_file()


def make_model(name: str, input_shape: tuple[int, ...], n_classes: int, seed: int = 0, **options: Any) -> nn.Module:
    """A fresh network by registered name (``auto`` resolved for ``input_shape``), seeded.

    Builder options the chosen network does not take are left out, so one call can carry
    ``hidden=`` (for an MLP) and ``channels=`` (for a CNN); :class:`ModelSpec` refuses them.
    """
    concrete = resolve_model_name(name, tuple(input_shape))
    if ":" not in concrete:
        accepted = MODELS.get(concrete).options()
        options = {k: v for k, v in options.items() if k in accepted or k in MODEL_OPTIONS}
    return as_model_spec(concrete, **options).build(input_shape, n_classes, seed=seed)


# ------------------------------------------------------------------ building
def build_named(name: str, input_shape: tuple[int, ...], n_classes: int, pretrained: bool | None,
                **options: Any) -> nn.Module:
    prefix, _, rest = name.partition(":")
    if rest and prefix in PREFIX_EXTRAS:
        if options:
            raise SpurlabError(f"{prefix} models take no builder options, got {sorted(options)}")
        MODELS.load()
        return PREFIX_BUILDERS[prefix](rest, input_shape, n_classes, bool(pretrained))
    entry = MODELS.get(name)
    if entry.inputs == "images" and len(input_shape) != 3:
        raise SpurlabError(f"model {name!r} needs image inputs (C, H, W), got inputs of shape {input_shape}",
                           hint="use linear or mlp for vectors")
    known = entry.options()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise SpurlabError(f"model {name!r} has no option(s) {', '.join(unknown)}",
                           hint=f"its options: {', '.join(known) or '(none)'}, pretrained, freeze, feature_layer")
    use_pretrained = entry.pretrained_default if pretrained is None else bool(pretrained)
    return entry.builder(input_shape, n_classes, pretrained=use_pretrained, **options)


def call_factory(factory: Callable[..., nn.Module], input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """``factory(input_shape, n_classes)``, its failures named."""
    name = getattr(factory, "__qualname__", repr(factory))
    try:
        net = factory(input_shape, n_classes)
    except Exception as exc:
        raise SpurlabError(f"the model factory {name} raised {type(exc).__name__}: {exc}",
                           hint="a factory is called as factory(input_shape, n_classes) with input_shape "
                                "(C, H, W) or (D,) and must return an nn.Module") from exc
    if not isinstance(net, nn.Module):
        raise SpurlabError(f"the model factory {name} returned {type(net).__name__}, not an nn.Module")
    return net


# ------------------------------------------------------------------ models from files
def load_model_file(text: str | Path) -> ModelSpec:
    """``FILE`` (a TorchScript model from ``torch.jit.save``) or ``pkg.module:factory`` as a model.

    A TorchScript file gives an already trained module; ``pkg.module:factory`` a factory (a
    callable taking ``(input_shape, n_classes)``) or a module instance defined in that file.
    Pickled models (``torch.save(model)``) are refused: loading them runs arbitrary code.
    """
    text = str(text)
    path = Path(text).expanduser()
    if path.is_file():
        return ModelSpec(load_torchscript(path))
    module_name, sep, attr = text.partition(":")
    if not sep or not attr or "/" in module_name or module_name.endswith((".pt", ".pth", ".ts")):
        raise SpurlabError(f"model file not found: {text}",
                           hint="pass a TorchScript file written by torch.jit.save, or pkg.module:factory")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SpurlabError(f"cannot import the model {text!r}: {exc}",
                           hint="pkg.module must be importable from this Python (check PYTHONPATH) and define "
                                f"{attr!r}") from exc
    if not isinstance(obj, nn.Module) and not callable(obj):
        raise SpurlabError(f"{text} is a {type(obj).__name__}, not a factory or an nn.Module")
    return ModelSpec(obj)


def load_torchscript(path: Path) -> nn.Module:
    try:
        with warnings.catch_warnings():  # torch 2.9+ marks TorchScript deprecated; it is still the safe format
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        raise SpurlabError(f"{path} is not a TorchScript model ({str(exc).splitlines()[0][:120]})",
                           hint="save your trained model with torch.jit.save(torch.jit.script(model), FILE) "
                                "(or torch.jit.trace); pickled models and bare state_dicts cannot be loaded "
                                "safely") from exc


def model_from_text(text: str) -> Any:
    """What ``--model TEXT`` means: a registered name (or ``torchvision:``/``timm:`` name) stays a name;
    an existing file or ``pkg.module:factory`` is loaded."""
    prefix = text.split(":", 1)[0]
    if text == "auto" or text in MODELS or (":" in text and prefix in PREFIX_EXTRAS):
        return text
    if Path(text).expanduser().is_file() or ":" in text:
        return load_model_file(text)
    raise UnknownNameError("model", text, model_names())


def freeze_backbone(model: nn.Module) -> nn.Module:
    """Every parameter but the linear ``head``'s stops training (for loops that train the whole module)."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise SpurlabError(f"freeze=backbone needs a 'head' layer on {type(model).__name__}",
                           hint="name the last linear layer 'head', or train on cached features")
    head_params = {id(p) for p in head.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in head_params)
    return model


__all__ = ["MODELS", "ModelEntry", "ModelSpec", "as_model_spec", "build_named", "call_factory",
           "freeze_backbone", "load_model_file", "make_model", "model_from_text", "model_help", "model_names",
           "register_model", "resolve_model_name"]
