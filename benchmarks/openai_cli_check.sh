#!/usr/bin/env bash
# The `openai` command line (openai < 2.35, in a throwaway venv) against a running OpenAI-compatible server.
#
#   benchmarks/openai_cli_check.sh http://127.0.0.1:8000 [MODEL]
#
# URL may end in /v1 or not. MODEL defaults to the first id /v1/models lists. Runs, in order:
#   openai -b URL/v1/ api models.list
#   openai -b URL/v1/ api completions.create -m MODEL -p "The elf queen" -M 16
#   openai -b URL/v1/ api chat.completions.create -m MODEL -g user "Hello"
# and ends with "N passed, N failed" (exit 1 if any failed).
#
# What these commands send (openai 2.34's CLI, read from its source and captured on the wire):
#   GET  /v1/models
#   POST /v1/completions       {"model": M, "prompt": "The elf queen", "echo": false, "max_tokens": 16}
#   POST /v1/chat/completions  {"messages": [{"role": "user", "content": "Hello"}], "model": M, "stream": false}
#        (chat's -M is sent as "max_tokens", not "max_completion_tokens"; without -M no limit is sent)
# with "Authorization: Bearer $OPENAI_API_KEY" (the CLI refuses to run without a key, so one is set here)
# and User-Agent "_ModuleClient/Python 2.34.0" plus X-Stainless-* headers. A server must therefore accept
# "echo": false and "stream": false, choose a default length when no limit is given, and answer with
# choices[].text (completions) and choices[].message.content (chat); models.list prints every entry of
# "data". The CLI joins paths to the base URL without adding a slash, so the base must end in "/"
# (http://host:port/v1 alone would request /v1models); this script adds it.
set -uo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 URL [MODEL]" >&2
    exit 2
fi
VENV=${OAICLI_VENV:-/tmp/oaicli}
base=${1%/}
[[ $base == */v1 ]] || base=$base/v1
base=$base/
export OPENAI_API_KEY=${OPENAI_API_KEY:-none}

if [[ ! -x $VENV/bin/openai ]]; then
    "${PYTHON:-python3}" -m venv "$VENV" && "$VENV/bin/pip" install --quiet 'openai<2.35' || exit 1
fi
model=${2:-$("$VENV/bin/python" -c 'import sys, openai; print(openai.OpenAI(base_url=sys.argv[1]).models.list().data[0].id)' "$base")} || {
    echo "could not list models at $base" >&2
    exit 1
}

passed=0
failed=0
check() {
    echo "\$ openai $*"
    if "$VENV/bin/openai" "$@"; then
        passed=$((passed + 1))
    else
        echo "FAILED (exit $?): openai $*"
        failed=$((failed + 1))
    fi
}
check -b "$base" api models.list
check -b "$base" api completions.create -m "$model" -p "The elf queen" -M 16
check -b "$base" api chat.completions.create -m "$model" -g user "Hello"
echo "openai_cli_check: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
