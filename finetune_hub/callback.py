"""A transformers TrainerCallback that reports a Trainer's run to finetune_hub:

    from finetune_hub.callback import FinetuneHubCallback

    trainer.add_callback(FinetuneHubCallback(team=1, project="support-bot",
                                             base_model="HuggingFaceTB/SmolLM2-135M-Instruct"))

The run starts with the training arguments as parameters, each logged value becomes a metric
point (with system memory), and when training ends the trained weights (an adapter, or the
full model, as safetensors) and the tokenizer are uploaded, so the run can be evaluated and
registered. A process that dies before the end marks its run failed on its way out."""

from __future__ import annotations

import atexit
import tempfile

from transformers import TrainerCallback

from finetune_hub.client import Client

ARG_TYPES = (bool, int, float, str)


class FinetuneHubCallback(TrainerCallback):
    def __init__(
        self,
        *,
        team: int,
        project: str | None = None,
        experiment: int | None = None,
        name: str = "",
        base_model: str = "",
        tags: dict | None = None,
        upload_model: bool = True,
        url: str | None = None,
        token: str | None = None,
        client: Client | None = None,
    ):
        if project is None and experiment is None:
            raise ValueError("FinetuneHubCallback needs a project name or an experiment id")
        self.client = client or Client(url, token)
        self.where = {"team": team, "project": project, "experiment": experiment}
        self.name, self.base_model, self.tags = name, base_model, tags or {}
        self.upload_model = upload_model
        self.run = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or self.run is not None:
            return
        params = {k: v for k, v in args.to_dict().items() if isinstance(v, ARG_TYPES)}
        config = getattr(model, "config", None)
        if config is not None:
            params["model_type"] = getattr(config, "model_type", "")
        if hasattr(model, "peft_config"):
            params["technique"] = "lora"
        self.run = self.client.start_run(
            **self.where,
            name=self.name or args.run_name or "",
            params=params,
            tags=self.tags,
            base_model=self.base_model,
        )
        atexit.register(self._abandoned)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.run is None or not logs:
            return
        self.run.log(logs, step=state.global_step)
        self.run.log_system(step=state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.run is None:
            return
        try:
            self.run.flush()
            if self.upload_model and model is not None:
                self._upload(model, kwargs.get("processing_class") or kwargs.get("tokenizer"))
        except BaseException as exc:
            self.run.end("failed", error=f"{type(exc).__name__}: {exc}")
            raise
        self.run.end("succeeded")
        atexit.unregister(self._abandoned)

    def _upload(self, model, tokenizer) -> None:
        with tempfile.TemporaryDirectory(prefix="finetune-hub-upload-") as folder:
            model.save_pretrained(folder, safe_serialization=True)
            if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
                tokenizer.save_pretrained(folder)
            self.run.upload_folder(folder)

    def _abandoned(self) -> None:
        """At exit with the run still open: training raised or was interrupted."""
        if self.run is not None and not self.run.ended:
            try:
                self.run.end("failed", error="the training process ended before training did")
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
