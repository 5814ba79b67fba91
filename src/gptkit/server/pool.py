"""The models a server answers with: its base models, always loaded, and fine-tuned ones loaded on first use.

A fine-tuned model (a job's `ft:...`, a checkpoint's `...:ckpt-step-N` or `ftckpt_...`) is found in the registry
and loaded (`served.load_served`, i.e. gptkit.tasks.bundle.load, with the chat template stored in its folder) into an
engine of its own the first time a request names it. Beyond `max_loaded` fine-tuned models the least recently used
is unloaded: its engine finishes the requests it has, then stops. A deleted model is unloaded at once. One whose
folder is gone or does not load raises ModelUnavailableError and leaves the pool as it was, so that other models
keep answering and the model loads once its folder is restored.

Finding and loading block (the store, the disk): `get`, `delete` and `close` are for a worker thread; `cached`,
which answers only from memory, is for the event loop.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

from gptkit.errors import GptkitError
from gptkit.server.registry import FineTunedModel, ModelRegistry, ModelUnavailableError
from gptkit.server.responses import Model
from gptkit.server.served import ServedModel, load_served
from gptkit.server.store import NotFoundError, RequestError

__all__ = ["DRAIN_SECONDS", "ModelPool"]

log = logging.getLogger("gptkit.server")
DRAIN_SECONDS = 60.0  # how long an unloaded model's engine may take to finish the requests it has


class ModelPool:
    """Base models (served name -> model, engines started by the caller) and the fine-tuned models of `registry`.

    load: builds a not yet started ServedModel from a fine-tuned model's folder (default: `load_served` on the CPU).
    on_load: called with each fine-tuned model before its engine starts (the app sets its metrics observer).
    """

    def __init__(
        self,
        base: Mapping[str, ServedModel],
        *,
        registry: ModelRegistry | None = None,
        load: Callable[[Path], ServedModel] = load_served,
        max_loaded: int = 2,
        on_load: Callable[[str, ServedModel], None] | None = None,
    ) -> None:
        if max_loaded < 1:
            raise ValueError(f"max_loaded must be >= 1, got {max_loaded}")
        self.base, self.registry, self.max_loaded = dict(base), registry, max_loaded
        self._load, self._on_load = load, on_load
        self._loaded: OrderedDict[str, ServedModel] = OrderedDict()  # least recently used first
        self._index = threading.Lock()  # the order above; held only for dictionary operations
        self._loading = threading.Lock()  # one load (or unload) at a time

    @property
    def loaded(self) -> list[str]:
        """The fine-tuned models in memory, least recently used first."""
        with self._index:
            return list(self._loaded)

    def engines(self) -> dict[str, ServedModel]:
        """Every model in memory, base ones first."""
        with self._index:
            return {**self.base, **self._loaded}

    def cached(self, name: str) -> ServedModel | None:
        """The model if it is in memory (marked as just used), without blocking; None otherwise. A fine-tuned
        model whose engine has stopped is forgotten, to be loaded again."""
        if name in self.base:
            return self.base[name]
        with self._index:
            model = self._loaded.get(name)
            if model is not None and not model.engine.healthy:
                del self._loaded[name]
                return None
            if model is not None:
                self._loaded.move_to_end(name)
            return model

    def get(self, name: str) -> ServedModel:
        """The model named `name`, loading a fine-tuned one first if needed. NotFoundError: no such model;
        ModelUnavailableError: a fine-tuned model whose folder is gone or does not load."""
        if (model := self.cached(name)) is not None:
            return model
        registry = self._registry_of(name)
        with self._loading:
            if (model := self.cached(name)) is not None:  # loaded by a request that came just before
                return model
            found = registry.get(name)
            model = self._load_fine_tuned(found)
            model.created, model.owned_by, model.source = found.created, found.owned_by, str(found.path)
            if self._on_load is not None:
                self._on_load(name, model)
            model.engine.start()
            with self._index:
                self._loaded[name] = model
                evicted = [self._loaded.popitem(last=False)[1] for _ in range(len(self._loaded) - self.max_loaded)]
        for old in evicted:
            _close_later(old)
        return model

    def _load_fine_tuned(self, found: FineTunedModel) -> ServedModel:
        """`load` on a fine-tuned model's folder, logged and raised as ModelUnavailableError when the folder is gone
        or damaged (gptkit's errors naming the file, or the OS's); anything else is a bug and stays as it is."""
        try:
            return self._load(found.folder())
        except ModelUnavailableError as exc:  # the folder is gone
            log.warning("%s", exc)
            raise
        except (GptkitError, OSError) as exc:
            error = ModelUnavailableError(found.id, found.path, str(exc))
            log.warning("%s", error)
            raise error from exc

    def folder(self, name: str) -> str | None:
        """The folder a model was loaded from (None: not known), or a fine-tuned model's, loaded or not: what a job
        fine-tuning it trains. NotFoundError: no such model; ModelUnavailableError: a fine-tuned one whose folder is
        gone."""
        if name in self.base:
            return self.base[name].source
        return str(self._registry_of(name).path(name))

    def _registry_of(self, name: str) -> ModelRegistry:
        """The registry, for a name that can be a fine-tuned model's; NotFoundError naming the models there are."""
        if self.registry is None or not self.registry.is_fine_tuned(name):
            raise NotFoundError(f"model {name!r} does not exist; this server has {', '.join(sorted(self.base))}")
        return self.registry

    def cards(self) -> list[Model]:
        """OpenAI's model objects: the base models, then the fine-tuned ones (newest first)."""
        cards = [self.card(name) for name in self.base]
        if self.registry is not None:
            cards += [Model(id=m.id, created=m.created, owned_by=m.owned_by) for m in self.registry.list()]
        return cards

    def card(self, name: str) -> Model:
        """One model's object; NotFoundError when there is none (the fine-tuned ones need not be loaded)."""
        if name in self.base:
            return Model(id=name, created=self.base[name].created, owned_by=self.base[name].owned_by)
        found = self._registry_of(name).get(name)
        return Model(id=found.id, created=found.created, owned_by=found.owned_by)

    def delete(self, name: str) -> dict[str, object]:
        """Delete a fine-tuned model (gptkit.server.registry) and unload every loaded model it took with it
        (a job's model takes its checkpoints). RequestError for a base model."""
        if name in self.base:
            raise RequestError(f"{name!r} is a base model of this server; only fine-tuned models can be deleted")
        registry = self._registry_of(name)
        deleted = registry.delete(name)
        with self._loading:
            gone = []
            for loaded in self.loaded:
                try:
                    registry.get(loaded)
                except NotFoundError:
                    gone.append(loaded)
            with self._index:
                dropped = [self._loaded.pop(n) for n in gone]
        for model in dropped:
            _close_later(model)
        return deleted

    def close(self, timeout: float = DRAIN_SECONDS) -> None:
        """Unload every fine-tuned model, letting each finish its requests for up to `timeout` seconds (the base
        models' engines are the caller's to close)."""
        with self._loading, self._index:
            models = list(self._loaded.values())
            self._loaded.clear()
        for model in models:
            model.engine.close(drain=True, timeout=timeout)


def _close_later(model: ServedModel) -> None:
    """Stop an unloaded model's engine once its requests are done, without making the caller wait."""
    kwargs = {"drain": True, "timeout": DRAIN_SECONDS}
    threading.Thread(target=model.engine.close, kwargs=kwargs, name="gptkit-unload", daemon=True).start()
