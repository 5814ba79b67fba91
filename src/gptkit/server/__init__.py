"""The server: an OpenAI-compatible HTTP API over gptkit models (`gptkit serve`).

`engine` is the continuous-batching engine, a library piece without HTTP: one thread per model owns a
`DecodeState` whose rows requests join and leave between decode steps. `protocol` holds OpenAI's request and
response objects, `app` maps HTTP onto engines (no tensors, no model code), `metrics` exports Prometheus text.
FastAPI and uvicorn come with the `serve` extra and are imported only here.

May import `gptkit.tasks`, `gptkit.training`, `gptkit.generation`, `gptkit.models`, `gptkit.text` and the
ground floor.
"""
