"""`expc run`: from a checked spec to a complete run folder, batch by batch, resumable.

The order of things is what makes a run folder trustworthy: the folder is claimed (status
`running`) before anything can fail, every failure after that marks it `failed` with its
diagnostics, checkpoints save all state and then the cursor, and `complete` is written only
after the results. Ctrl-C finishes the batch in flight, saves a checkpoint and stops with
a message telling how to resume.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import torch

from expc.compiler.pipeline import compile_plan
from expc.compiler.plan import Plan, build_plan
from expc.models.loading import load_model, read_model_config
from expc.models.tokenizer import load_tokenizer
from expc.runtime.aggregate.masks import EmptyMaskError
from expc.runtime.cache import Results
from expc.runtime.checkpoint import Cursor, resume_states, save_checkpoint
from expc.runtime.data.ledger import LEDGER_KEY, SampleLedger
from expc.runtime.data.preview import data_preview
from expc.runtime.data.stream import DataStream
from expc.runtime.device import resolve_device
from expc.runtime.distributed import (World, barrier, current_world, gather_objects,
                                      gather_states, ignore_launcher_stop, shutdown)
from expc.runtime.fingerprint import run_fingerprint
from expc.runtime.intervene.edits import build_edits
from expc.runtime.intervene.facts import ModelFacts
from expc.runtime.intervene.sources import RunSources
from expc.runtime.intervene.units import Selection
from expc.runtime.nonfinite import (NonFiniteError, check_every, check_finite,
                                    nonfinite_diagnostic)
from expc.runtime.progress import Progress
from expc.runtime.rank_failures import clear_failures, settle
from expc.runtime.run_lock import run_lock
from expc.runtime.results_writer import ResultsWriter
from expc.runtime.sample_error import SampleError
from expc.runtime.sinks import BatchContext, bind_sinks
from expc.runtime.state import (buffered_bytes, build_states, collect_results,
                                streamed_descriptions, take_rows, token_field_names)
from expc.runtime.state_protocol import State
from expc.runtime.stop_signals import Interrupted, StopSignals
from expc.runtime.store import RunStore, open_run
from expc.spec import ir
from expc.spec import load as load_spec
from expc.spec import to_json
from expc.spec.diagnostics import DiagnosticError
from expc.spec.run_format import CHECKPOINT_DIR
from expc.spec.sharding import refuse_sharded

log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class RunRequest:
    """What `expc run` was asked to do."""

    spec_path: Path
    overrides: tuple[str, ...] = ()
    out_dir: Path | None = None
    resume: bool = False
    force: bool = False
    quiet: bool = False


def spec_fingerprint_text(spec_text: str, overrides: Sequence[str]) -> str:
    """The spec text as run: the file plus its `--set` overrides (both change results)."""
    return spec_text + "".join(f"\n# --set {o}" for o in overrides)


def run(request: RunRequest) -> Results:
    """Run a spec file end to end and return its results; see the module docstring."""
    experiment = load_spec(request.spec_path, overrides=request.overrides)
    spec_text = spec_fingerprint_text(
        Path(request.spec_path).read_text(encoding="utf-8"), request.overrides)
    return run_experiment(experiment, spec_path=str(request.spec_path), spec_text=spec_text,
                          out_dir=request.out_dir, resume=request.resume, force=request.force,
                          quiet=request.quiet)


def run_experiment(experiment: ir.Experiment, *, spec_path: str, spec_text: str,
                   out_dir: Path | None = None, resume: bool = False, force: bool = False,
                   quiet: bool = False) -> Results:
    """Run a checked experiment; rank 0 writes the run folder."""
    device = resolve_device(experiment.device, span=experiment.device_span)
    world = current_world(device)
    ignore_launcher_stop(world)  # what StopSignals restores: a settled rank is not killed
    run_dir = Path(out_dir or experiment.output.dir)
    store = None
    with contextlib.ExitStack() as held:
        stop = held.enter_context(StopSignals())
        if world.is_main:
            held.enter_context(run_lock(run_dir))
            with stop.deferred():  # the claim is whole before a signal can fail it
                store = RunStore.start(run_dir, spec_path=spec_path, spec_text=spec_text,
                                       ir=to_json(experiment),
                                       model={"path": experiment.model.path},
                                       data_source=experiment.data.source.path,
                                       force=force, resume=resume)
                clear_failures(run_dir)
        barrier(world)
        try:
            stop.raise_pending()
            return _execute(experiment, store=store, run_dir=run_dir, world=world,
                            device=device, resume=resume, quiet=quiet, stop=stop)
        except BaseException as exc:  # a signal (`Interrupted`) too: resumable, not complete
            ignore_launcher_stop(world)  # torchrun's stop must not cut the report short
            with stop.deferred():
                cause = settle(exc, rank=world.rank, distributed=world.distributed,
                               run_dir=run_dir)
                if store is not None:
                    store.fail(cause)
            if cause is exc:
                raise
            raise cause from None  # another rank failed first: its error is the run's
        finally:
            shutdown(world)


@attrs.define(kw_only=True)
class _Loop:
    """The per-rank state of one run: data, batches, model graph and state objects."""

    data: DataStream  # this rank's batches
    graph: torch.nn.Module
    plan: Plan
    states: dict[str, State]
    context: BatchContext
    selections: dict[str, Selection]  # each intervention's units, by its entry key


def _describe_model(experiment: ir.Experiment, model, device: torch.device) -> dict:
    hydra = model.hydra
    return {"path": experiment.model.path, "device": str(device),
            "architecture": model.config.model_type,
            "config": dict(model.config.raw), "n_layers": model.config.n_layers,
            "hydra": {"trunk": hydra.trunk, "heads": hydra.n_heads}}


def _prepare(experiment: ir.Experiment, *, device: torch.device, world: World,
             seconds: dict[str, float], store: RunStore | None) -> _Loop:
    t0 = time.perf_counter()
    torch.manual_seed(experiment.seed)
    # The plan first, so that only the layers it reads are built and loaded.
    plan = build_plan(experiment, n_layers=read_model_config(experiment.model.path).n_layers)
    model = load_model(experiment.model.path, hydra=experiment.hydra, interventions=experiment.interventions,
                       dtype=experiment.dtype, device=device, n_layers_built=plan.layers_needed)
    if store is not None:
        store.manifest["model"] = _describe_model(experiment, model, device)
    source = experiment.data.source
    tokenizer = None if source.kind == "tokens" else load_tokenizer(experiment.model.path)
    data = DataStream.open(source, batch_size=experiment.data.batch_size,
                           window=experiment.data.window, limit=experiment.data.limit,
                           tokenizer=tokenizer, max_length=experiment.data.max_length,
                           max_positions=model.config.max_position_embeddings,
                           vocab_size=model.config.vocab_size,
                           token_fields=token_field_names(plan),
                           pad_token_id=_pad_token_id(tokenizer, model.config),
                           rank=world.rank, world_size=world.size)
    if store is not None:
        store.manifest["data"]["preview"] = data_preview(tokenizer, data.first_window())
    seconds["load"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if world.distributed:
        refuse_sequential_metrics(plan)
    states = build_states(plan, model, total_batches=len(data))
    states[LEDGER_KEY] = SampleLedger()  # the run order, for the finish (`data/ledger.py`)
    context = BatchContext()
    # Earlier runs' tensors are read here, once, onto the device; units are chosen now.
    edits, selections = build_edits(
        plan.interventions, facts=ModelFacts.from_model(model, plan.interventions),
        sources=RunSources(device=device), context=context, n_samples=data.n_samples)
    sinks = bind_sinks(states, metric_keys={entry.key for entry in plan.metrics},
                       effect_keys={entry.key for entry in plan.effects}, context=context)
    graph = compile_plan(plan, model, sinks, edits).graph_module
    if experiment.compile:
        graph = torch.compile(graph, dynamic=True)  # one compile for every sequence length
    seconds["compile"] = time.perf_counter() - t0
    return _Loop(data=data, graph=graph, plan=plan, states=states, context=context,
                 selections=selections)


def refuse_sequential_metrics(plan: Plan) -> None:
    """Metrics whose rounds depend on every earlier batch cannot run sharded
    (`expc.spec.sharding`; `expc run --nproc` refuses them before launching)."""
    refuse_sharded((entry.metric, entry.span) for entry in plan.metrics)


def _pad_token_id(tokenizer, config) -> int | None:
    """The tokenizer's pad id; for pre-tokenised data, the model config's."""
    return config.pad_token_id if tokenizer is None else tokenizer.pad_token_id


def _empty_mask_error(exc: EmptyMaskError, loop: _Loop, batch_number: int) -> DiagnosticError:
    number = batch_number if exc.batch is None else exc.batch
    sample = int(loop.data.batch(number)[exc.row])
    return DiagnosticError(loop.data.sample_error(
        sample, f"the `{exc.mask or 'attention'}` mask selects no token of this sample",
        code="empty-mask"))


@contextlib.contextmanager
def _sample_diagnostics(loop: _Loop, batch_number: Callable[[], int]):
    """Problems found with one sample while batches run (or states finish) -> the run's
    diagnostic at that sample's data line; `batch_number()` is the batch in flight."""
    try:
        yield
    except EmptyMaskError as exc:
        raise _empty_mask_error(exc, loop, batch_number()) from None
    except SampleError as exc:
        raise DiagnosticError(loop.data.sample_error(exc.sample, exc.message,
                                                     code=exc.code)) from None
    except NonFiniteError as exc:
        raise nonfinite_diagnostic(exc, samples=loop.data.batch(exc.at.batch).tolist(),
                                   origin=loop.data.origin) from None


def _execute(experiment: ir.Experiment, *, store: RunStore | None, run_dir: Path, world: World,
             device: torch.device, resume: bool, quiet: bool, stop: StopSignals) -> Results:
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    loop = _prepare(experiment, device=device, world=world, seconds=seconds, store=store)
    # A checkpoint resumes only the same work: runtime/fingerprint.py says what that covers;
    # the shard size too, since a checkpoint's shards were cut by it.
    fingerprint = {**run_fingerprint(experiment, world_size=world.size),
                   "shard_size": str(experiment.output.shard_size)}
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    start, elapsed, shards = 0, 0.0, ()
    if resume:
        cursor = resume_states(checkpoint_dir, rank=world.rank, fingerprint=fingerprint,
                               states=loop.states, batches=loop.data)
        if cursor is not None:
            start, elapsed, shards = cursor.batches_done, cursor.elapsed_seconds, cursor.shards
            log.info("resuming after batch %d of %d", start, len(loop.data))
    writer = ResultsWriter.resume(run_dir, rank=world.rank,
                                  shard_size=experiment.output.shard_size,
                                  first_row=_first_row(loop, world), shards=shards)
    try:
        return _run_batches(experiment, loop, store=store, world=world, device=device,
                            quiet=quiet, stop=stop, writer=writer, fingerprint=fingerprint,
                            start=start, elapsed=elapsed, seconds=seconds, started=started)
    finally:
        writer.close()


def _first_row(loop: _Loop, world: World) -> int:
    """This rank's first row in run order: the rows of every lower rank come first."""
    return sum(loop.data.samples_of_rank(r) for r in range(world.rank))


def _run_batches(experiment: ir.Experiment, loop: _Loop, *, store: RunStore | None,
                 world: World, device: torch.device, quiet: bool, stop: StopSignals,
                 writer: ResultsWriter, fingerprint: dict[str, str], start: int,
                 elapsed: float, seconds: dict[str, float], started: float) -> Results:
    checkpoint_dir = writer.folder / CHECKPOINT_DIR

    def checkpoint(done: int) -> None:
        cursor = Cursor(batches_done=done, samples_done=loop.data.samples_before(done),
                        elapsed_seconds=elapsed + time.perf_counter() - t_run,
                        fingerprint=fingerprint, shards=tuple(writer.flush()))
        states = {key: state.state_dict() for key, state in loop.states.items()}
        save_checkpoint(checkpoint_dir, states=states, cursor=cursor, rank=world.rank)
        if store is not None:
            store.record_checkpoint(batches_done=done)

    every = experiment.output.checkpoint_every
    t_run = time.perf_counter()
    progress = Progress(total=len(loop.data), done=start, quiet=quiet or not world.is_main)
    number = start
    check_each = check_every(device)
    with (stop.deferred(), torch.inference_mode(), progress,
          _sample_diagnostics(loop, lambda: number)):
        for batch in loop.data.batches(start):
            number = batch.number
            input_ids, attention_mask = batch.input_ids.to(device), batch.attention_mask.to(device)
            loop.context.set(attention_mask=attention_mask,
                             field_mask=None if batch.field_mask is None
                             else batch.field_mask.to(device),
                             input_ids=input_ids, sample_index=batch.sample_index.to(device),
                             token_fields={name: ids.to(device)
                                           for name, ids in batch.token_fields.items()})
            loop.graph(input_ids, attention_mask)
            loop.states[LEDGER_KEY].add(batch)
            writer.offer(buffered_bytes(loop.plan, loop.states),
                         lambda: take_rows(loop.plan, loop.states))
            progress.advance(samples=batch.size, tokens=int(batch.token_count.sum()))
            done = number + 1
            if done % check_each == 0 or stop.received or (every and done % every == 0):
                check_finite(loop.plan, loop.states)  # before any checkpoint saves them
            if every and done % every == 0 and done < len(loop.data):
                checkpoint(done)
            if stop.received:
                checkpoint(done)
                raise Interrupted(signal_name=stop.received, run_dir=checkpoint_dir,
                                  batches_done=done)
        check_finite(loop.plan, loop.states)  # the batches since the last check
        shards = _last_shards(loop, world, writer)
        gathered = (gather_states(world, {k: s.state_dict() for k, s in loop.states.items()})
                    if world.distributed else None)  # one process: nothing to merge
    seconds["run"] = elapsed + time.perf_counter() - t_run
    if not world.is_main:
        return Results({})
    return _finish(experiment, loop, gathered, shards, store=store, world=world,
                   seconds=seconds, started=started)


def _last_shards(loop: _Loop, world: World, writer: ResultsWriter) -> list[dict] | None:
    """Every rank's shards in rank order on rank 0 (other ranks: []), each rank's held rows
    written as its last shard first; None when the run's rows fit one `shard_size` and no
    shard was cut (then they go to rank 0 with the states, into one results file)."""
    held = buffered_bytes(loop.plan, loop.states)
    everyone = gather_objects(world, (writer.cut_any, held), everywhere=True)
    if not any(cut for cut, _ in everyone) and sum(b for _, b in everyone) < writer.shard_size:
        return None
    writer.cut(take_rows(loop.plan, loop.states))
    ranks = gather_objects(world, writer.flush())
    return [shard for shards in ranks or () for shard in shards]


def _finish(experiment: ir.Experiment, loop: _Loop, gathered, shards: list[dict] | None, *,
            store: RunStore, world: World, seconds: dict[str, float],
            started: float) -> Results:
    """Merge every rank's state (rank order), write results (in one file, or the shards'
    index with the last shard), then the `complete` manifest."""
    states = merge_ranks(loop.states, gathered)
    ledger = states[LEDGER_KEY]
    run_order = ledger.run_order()
    with _sample_diagnostics(loop, lambda: len(loop.data) - 1):  # checks states defer
        tensors, descriptions = collect_results(loop.plan, states, sample_index=run_order,
                                                token_count=ledger.token_counts(),
                                                selections=loop.selections)
    if shards is None:
        store.write_results(tensors, descriptions)
    else:
        keys = {piece["key"] for shard in shards for piece in shard["pieces"]}
        store.write_sharded_results(tensors, {**descriptions,
                                              **streamed_descriptions(loop.plan, keys)},
                                    shards=shards, run_order=run_order,
                                    shard_size=experiment.output.shard_size)
    seconds["total"] = time.perf_counter() - started
    store.finish(samples=ledger.n_samples, tokens=ledger.n_tokens,
                 batches=loop.data.total_batches, seconds=seconds)
    log.info("run complete: %d samples, %d tokens -> %s", ledger.n_samples, ledger.n_tokens,
             store.run_dir)
    metadata = {"run_dir": str(store.run_dir)}
    if shards is None:
        return Results(tensors, metadata=metadata)
    return Results.reading(open_run(store.run_dir).tensors, metadata=metadata)


def merge_ranks(states: dict[str, State], gathered) -> dict[str, State]:
    """Rank 0's state objects with every other rank's state merged in, in rank order."""
    for other in (gathered or [])[1:]:
        for key, state in states.items():
            twin = copy.deepcopy(state)
            twin.load_state_dict(other[key])
            state.merge(twin)
    return states
