"""Typed resource models: a frozen dataclass per resource type, for drivers.

Every resource type a package declares (:mod:`tether.common.resource_types`)
has a model class made from its schema, so a new service's types get one
with no code of theirs: the fields every model has (:class:`Model`: id,
project, parent, provisioning status, applied generation), one field per
attribute, and one tuple per child type. A driver asks the resources it is
given for them::

    from tether.drivers.lbaas_models import Loadbalancer

    lb = change.tree.typed(Loadbalancer)        # statically typed: an IDE and mypy know it
    for listener in lb.listeners:
        if not listener.create_failed:
            bind(lb.vip_address, listener.protocol_port)

    volume = change.resource.model              # any installed type, its class made here

``Resource.attributes`` stays as it was: the models are a view of it.

Types
    ``string`` → ``str``, ``integer`` → ``int``, ``boolean`` → ``bool``,
    ``number`` → ``float``, ``array`` → ``tuple[item, ...]`` (the values are
    made tuples), ``object`` → ``Mapping[str, value]``; an ``enum`` has the
    type of its values, several types their union, a schema that names no
    type ``Any``. An attribute the type does not require is ``T | None``,
    None when absent, unless its schema has a ``default`` (the plugin applies
    it on create); ``null`` among its types adds ``| None`` too.

Names
    A field is named as its attribute, but characters other than ASCII
    letters, digits and ``_`` become ``_`` (``max-retries`` → ``max_retries``), leading
    underscores go, and a name that then starts with a digit gets ``f_``
    (``2fa`` → ``f_2fa``). A keyword, a name of the :class:`Model` base
    (``id``, ``project_id``, ``parent_id``, ``provisioning_status``,
    ``applied_generation``, ``resource``, ``resource_type``, ``on_device``,
    ``create_failed``, ``children``) or of what a model module uses (``str``,
    ``Mapping``, ``dataclasses``, a model class name ...), and a name an
    earlier attribute took, gets ``_`` appended until it is free (``class`` →
    ``class_``, ``id`` → ``id_``). The children of a type are named after its
    collection (``listeners``, ``pools``), by the same rules, after the
    attributes. A class is named after its type in CamelCase
    (``loadbalancer`` → ``Loadbalancer``, ``l7_policy`` → ``L7Policy``).

What a model leaves out
    Attributes a type's schema in this process does not name (a newer
    plugin's), and children of types it does not know, are only in
    ``model.resource`` (the :class:`~tether.drivers.resource.Resource` it
    was made from).

Checked-in models
    Classes made at run time are invisible to an IDE and to mypy. A service
    can check in a module of its types' models, written by
    ``python -m tether.drivers.model_source MODULE`` from the same schemas;
    tether does so for its load-balancing types
    (:mod:`tether.drivers.lbaas_models`), and a test holds it to them. Where
    such a module matches the installed schemas, ``Resource.model`` returns
    its classes too.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import typing
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar

from tether.common.resource_types import Registry
from tether.common.states import ProvisioningStatus
from tether.drivers.model_fields import BASE_FIELDS, FieldSpec, ModelSpec, class_name, frozen, model_spec
from tether.drivers.resource import Resource, believed_held, failed_create

LOG = logging.getLogger(__name__)

M = TypeVar("M", bound="Model")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Model:
    """The fields every resource model has; a type's model adds its own.

    :ivar provisioning_status: as in :class:`~tether.drivers.resource.Resource`.
    :ivar applied_generation: as in :class:`~tether.drivers.resource.Resource`.
    :ivar resource: the resource this model was made from (None for one
        built by hand): every attribute by its own name, every child.
    """

    #: the resource type this class models
    resource_type: ClassVar[str] = ""

    id: str
    project_id: str
    parent_id: str | None = None
    provisioning_status: ProvisioningStatus | None = None
    applied_generation: int | None = None
    resource: Resource | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def on_device(self) -> bool | None:
        """Whether a device is believed to hold some generation of it."""
        return believed_held(self.applied_generation)

    @property
    def create_failed(self) -> bool:
        """Its create failed and no device ever held it: leave it off the device."""
        return failed_create(self.provisioning_status, self.applied_generation)


def _thawed(value: Any) -> Any:
    return [_thawed(v) for v in value] if isinstance(value, tuple) else value


def children(type_name: str) -> Any:
    """The field of a model's children of type ``type_name``, as generated modules declare it."""
    return dataclasses.field(default=(), metadata={"children": type_name})


# -- resources into models and back ------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Plan:
    #: (field, attribute) of each attribute field
    attributes: tuple[tuple[str, str], ...]
    #: attributes without a default
    required: tuple[str, ...]
    #: (field, child type, child class) of each children field
    children: tuple[tuple[str, str, type[Model]], ...]


# By class, made once each: a dict (not functools.cache), which mypy lets
# classes key, and two threads making one plan at once make the same.
_PLANS: dict[type[Model], _Plan] = {}


def _plan(cls: type[Model]) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = _made_plan(cls)
    return plan


def _made_plan(cls: type[Model]) -> _Plan:
    hints = typing.get_type_hints(cls)
    attributes, required, kids = [], [], []
    for field in dataclasses.fields(cls):
        if field.name in BASE_FIELDS:
            continue
        child_type = field.metadata.get("children")
        if child_type is not None:
            kids.append((field.name, child_type, typing.get_args(hints[field.name])[0]))
            continue
        attribute = field.metadata.get("attribute", field.name)
        attributes.append((field.name, attribute))
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            required.append(attribute)
    return _Plan(tuple(attributes), tuple(required), tuple(kids))


def build(cls: type[M], resource: Resource) -> M:
    """``resource``, and what belongs to it, as a ``cls``.

    :raises TypeError: when ``resource`` is not of ``cls``'s type.
    :raises ValueError: when it lacks an attribute ``cls`` requires.
    """
    if resource.type != cls.resource_type:
        raise TypeError(f"{resource.type} {resource.id} is not a {cls.resource_type} ({cls.__name__})")
    plan = _plan(cls)
    missing = [a for a in plan.required if a not in resource.attributes]
    if missing:
        raise ValueError(
            f"{resource.type} {resource.id} lacks {', '.join(missing)}, which {cls.__name__} requires"
        )
    values: dict[str, Any] = {
        name: frozen(resource.attributes[attribute])
        for name, attribute in plan.attributes
        if attribute in resource.attributes
    }
    for name, child_type, child_cls in plan.children:
        values[name] = tuple(build(child_cls, c) for c in resource.children if c.type == child_type)
    return cls(
        id=resource.id,
        project_id=resource.project_id,
        parent_id=resource.parent_id,
        provisioning_status=resource.provisioning_status,
        applied_generation=resource.applied_generation,
        resource=resource,
        **values,
    )


def attributes_of(model: Model) -> dict[str, Any]:
    """A model's attributes by their own names, as ``Resource.attributes``
    holds them (tuples as lists); None reads as absent and is left out."""
    values = ((attribute, getattr(model, name)) for name, attribute in _plan(type(model)).attributes)
    return {attribute: _thawed(value) for attribute, value in values if value is not None}


class ResourceModels:
    """The model classes of a registry's resource types.

    :param checked_in: classes of a checked-in module, used where they match
        the registry's schemas: all of them or, when one differs, none.
    """

    def __init__(self, registry: Registry, checked_in: Iterable[type[Model]] = ()) -> None:
        self.specs = {name: model_spec(registry, name) for name in registry}
        self._classes: dict[str, type[Model]] = self._matching(checked_in)
        for name in self.specs:
            self._make(name)

    def model_class(self, type_name: str) -> type[Model]:
        """:raises LookupError: when no installed package declares ``type_name``."""
        try:
            return self._classes[type_name]
        except KeyError:
            raise LookupError(f"no installed package declares the resource type {type_name!r}") from None

    def model_of(self, resource: Resource) -> Model:
        return build(self.model_class(resource.type), resource)

    def _matching(self, classes: Iterable[type[Model]]) -> dict[str, type[Model]]:
        known = {cls.resource_type: cls for cls in classes if cls.resource_type in self.specs}
        differing = sorted(name for name, cls in known.items() if described(cls) != self.specs[name])
        if differing:
            LOG.warning(
                "checked-in models of %s differ from the installed schemas; using models made from them",
                ", ".join(differing),
            )
            return {}
        return known

    def _make(self, type_name: str) -> None:
        if type_name in self._classes:
            return
        spec = self.specs[type_name]
        scope: dict[str, Any] = {"Any": Any, "Mapping": Mapping, "str": str, "int": int, "float": float}
        scope |= {"bool": bool, "tuple": tuple, "None": None}
        for field in spec.fields:
            if field.children is not None:
                self._make(field.children)
                scope[class_name(field.children)] = self._classes[field.children]
        # The annotations are the very text a generated module declares, read
        # in a scope of nothing but the names that text may use.
        fields = [(f.name, eval(f.annotation, {"__builtins__": {}}, scope), _field(f)) for f in spec.fields]
        cls = dataclasses.make_dataclass(
            spec.class_name,
            fields,
            bases=(Model,),
            namespace={"resource_type": type_name, "__doc__": spec.description or None},
            frozen=True,
            kw_only=True,
        )
        cls.__module__ = __name__
        self._classes[type_name] = cls


def _field(spec: FieldSpec) -> Any:
    if spec.children is not None:
        return children(spec.children)
    metadata = {"attribute": spec.attribute} if spec.attribute != spec.name else {}
    if spec.required:
        return dataclasses.field(metadata=metadata)
    if isinstance(spec.default, dict):
        factory = functools.partial(copy.deepcopy, spec.default)
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=spec.default, metadata=metadata)


def described(cls: type[Model]) -> ModelSpec:
    """What a model class holds, as :func:`model_spec` says it (descriptions aside)."""
    fields = []
    for field in dataclasses.fields(cls):
        if field.name in BASE_FIELDS:
            continue
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        default = field.default if field.default is not dataclasses.MISSING else None
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        child_type = field.metadata.get("children")
        fields.append(
            FieldSpec(
                field.name,
                field.type if isinstance(field.type, str) else repr(field.type),
                None if child_type is not None else field.metadata.get("attribute", field.name),
                child_type,
                required,
                default,
            )
        )
    return ModelSpec(cls.__name__, cls.resource_type, (cls.__doc__ or "").strip(), tuple(fields))


@functools.cache
def installed() -> ResourceModels:
    """The models of the resource types installed in this process
    (``tether.resource_types`` entry points), made on first use."""
    from tether.drivers import lbaas_models  # here: it imports this module

    return ResourceModels(Registry.load(), lbaas_models.MODELS)
