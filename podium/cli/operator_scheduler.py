"""``podium operator scheduler``: the cluster's scheduler configuration (docs/preemption.md).

``get-config`` shows which job types may preempt lower-priority allocations;
``set-config --preempt service,batch,system`` (any of them, or ``none``) replaces the
setting for every type at once, as the issue's contract and Nomad's
``operator scheduler set-config`` do.  Both go through ``/v1/operator/scheduler/configuration``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from podium.cli import common
from podium.cli.common import AddressOpt, Output, OutputOpt, TokenOpt
from podium.models.schedconfig import (
    PREEMPTION_TYPES,
    PreemptionConfig,
    SchedulerConfiguration,
)

app = typer.Typer(
    help="The scheduler's cluster-wide configuration (preemption per job type).",
    no_args_is_help=True,
)


def parse_preempt(value: str) -> PreemptionConfig:
    """``service,batch,system`` (any subset, in any order) or ``none``; a usage error
    names what is wrong."""
    text = value.strip().lower()
    if text in ("none", ""):
        return PreemptionConfig.of_types([])
    types = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return PreemptionConfig.of_types(types)
    except ValueError as exc:
        common.usage(f"--preempt {value!r}: {exc} (or none)")


def _lines(config: SchedulerConfiguration) -> list[str]:
    pc = config.preemption_config
    out = [f"{'Scheduler type':16s} Preemption"]
    for t in PREEMPTION_TYPES:
        out.append(f"{t:16s} {'enabled' if pc.enabled(t) else 'disabled'}")
    where = (
        f"modify index {config.modify_index}"
        if config.modify_index
        else "never set: the defaults (system jobs preempt; service and batch do not)"
    )
    out.append("")
    out.append(f"Configuration: {where}")
    return out


@app.command("get-config")
def get_config(
    address: AddressOpt = common.DEFAULT_ADDR,
    token: TokenOpt = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Show which job types may preempt lower-priority allocations."""
    with common.handle_errors(output=output):
        config = common.make_client(address, token).scheduler_config()
        if output.structured:
            common.print_data(config.model_dump(mode="json"), output)
            return
        for line in _lines(config):
            typer.echo(line)


@app.command("set-config")
def set_config(
    preempt: Annotated[
        str,
        typer.Option(
            "--preempt",
            help="The job types that may preempt, comma-separated: any of service, batch, "
            "system; or none.  Types not named may not.",
            show_default=False,
        ),
    ],
    check_index: Annotated[
        int | None,
        typer.Option(
            "--check-index",
            help="Change it only if the stored configuration is at this modify index "
            "(0: never set).",
            show_default=False,
        ),
    ] = None,
    address: AddressOpt = common.DEFAULT_ADDR,
    token: TokenOpt = None,
    output: OutputOpt = Output.TABLE,
) -> None:
    """Set which job types may preempt lower-priority allocations (cluster-wide)."""
    with common.handle_errors(output=output):
        preemption = parse_preempt(preempt)
        client = common.make_client(address, token)
        config = client.set_scheduler_config(preemption, check_index=check_index)
        if output.structured:
            common.print_data(config.model_dump(mode="json"), output)
            return
        typer.echo(f"Scheduler configuration updated (index {config.modify_index}).")
        for line in _lines(config):
            typer.echo(line)
