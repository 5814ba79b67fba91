"""The server: an OpenAI-compatible HTTP API over gptkit models (`gptkit serve`).

`engine` is the continuous-batching engine, a library piece without HTTP: one thread per model owns a
`DecodeState` whose rows requests join and leave between decode steps. `served` puts a model behind an engine
(scoring and embeddings run on the engine's thread), `protocol` holds OpenAI's request objects and their mapping
onto SamplingParams, `responses` OpenAI's response objects, `handlers` turns requests into engine work and engine
events into responses, `app` maps HTTP onto all that (no tensors, no model code), `metrics` exports Prometheus
text, and `run` is `gptkit serve` as a function. FastAPI, uvicorn and prometheus_client come with the `serve`
extra and are imported only here (the engine needs none of them).

Fine-tuning jobs, beneath their HTTP endpoints: `store` is the SQLite database of files, jobs, job events and
checkpoints (the truth a restart reconciles from); `files` stores and checks uploads; `jobs` creates and
controls jobs (rows and requests only); `runner` runs one attempt at a job with `tasks.finetune`; `worker` is
the job worker process (`python -m gptkit.server.worker`) and the `Supervisor` the server owns; `registry`
maps fine-tuned model ids to the folders to serve. Above them, `fine_tuning` is the HTTP of /v1/files and
/v1/fine_tuning/jobs, and `pool` the models a server answers with: its base models and the fine-tuned ones,
loaded on first use and unloaded least recently used first.

`playground/` is the web page `app` serves at `/` (plain HTML, CSS and JavaScript, no build step, no network
beyond this server): it does everything through the same /v1 API a client uses.

May import `gptkit.tasks`, `gptkit.training`, `gptkit.generation`, `gptkit.models`, `gptkit.text` and the
ground floor.
"""
