"""``python -m firmware_bridge.keytool``: provision a key with its counter file, or write a lost
counter file again (firmware_bridge/PROTOCOL.md section 4)."""

from __future__ import annotations

from pathlib import Path

import click

from firmware_bridge.auth import (
    DATA,
    TELECOMMAND,
    CounterStore,
    CounterStoreError,
    KeyFileError,
    load_key,
    provision,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Keys and counter files of the authenticated serial link."""


@main.command("provision")
@click.argument("key_file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("counter_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--same-key-as", type=click.Path(dir_okay=False, path_type=Path), metavar="KEY_FILE",
              help="The other end's key file: this end gets the same secret.")
def provision_command(key_file: Path, counter_file: Path, same_key_as: Path | None) -> None:
    """A new key file (mode 0600) and its counter file."""
    try:
        secret = load_key(same_key_as)._secret if same_key_as is not None else None
        provision(key_file, counter_file, secret)
    except (KeyFileError, CounterStoreError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"key {key_file} and counter {counter_file} created")


@main.command("set-counter")
@click.argument("counter_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--telecommand", type=int, required=True, help="At least the flight computer's counter.")
@click.option("--data", type=int, required=True, help="At least the ground's counter.")
def set_counter(counter_file: Path, telecommand: int, data: int) -> None:
    """Write a lost counter file again (it must not exist) with each channel at least the
    sender's counter."""
    try:
        CounterStore.create(counter_file, {TELECOMMAND: telecommand, DATA: data})
    except (CounterStoreError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"counter {counter_file} written")


if __name__ == "__main__":
    main()
