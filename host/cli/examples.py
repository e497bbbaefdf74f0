"""The "Examples" section of each command's help (`nettx CMD -h`): a few command lines a user
types, as pcsc-tools' and ykman's manuals show them. A test parses every one of them."""

from __future__ import annotations

from collections.abc import Iterator

import click

EXAMPLES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("authority", "init"): (
        "nettx authority init --k 512",
        "nettx --home /srv/centre authority init --master docs/vectors/blom-v1.json --force",
    ),
    ("authority", "issue"): (
        "nettx authority issue seller:shop.example issuer:bank.example",
        "nettx authority issue delivery:post.example --out rows/",
    ),
    ("authority", "pair-key"): (
        "nettx authority pair-key holder:alice@example.org seller:shop.example",
    ),
    ("authority", "list"): (
        "nettx authority list",
        "nettx --home /srv/centre authority list --json",
    ),
    ("authority", "personalise"): (
        "nettx authority personalise --state alice.card.json --holder holder:alice@example.org",
        "nettx authority personalise --reader pcsc:0 --holder holder:bob@example.org "
        "--pin-file pin.txt --puk-file puk.txt",
    ),
    ("card", "new"): (
        "nettx card new --state alice.card.json",
        "nettx --state bob.card.json card new --state-key-file bob.key",
    ),
    ("card", "seal"): ("nettx card seal --state alice.card.json --state-key-file alice.key",),
    ("card", "serve"): (
        "nettx card serve --state alice.card.json",
        "nettx card serve --state alice.card.json --listen 127.0.0.1:35964",
        "nettx card serve --state alice.card.json --serial /dev/ttyUSB0",
    ),
    ("card", "info"): (
        "nettx card info --state alice.card.json",
        "nettx -r pcsc:0 card info --json",
    ),
    ("card", "encrypt"): (
        "nettx card encrypt --state alice.card.json --peer seller:shop.example "
        "--text 'hello' --context order-1",
        "nettx card encrypt --reader pcsc:0 --peer seller:shop.example --in order.txt "
        "--out order.box --pin-file pin.txt",
    ),
    ("card", "decrypt"): (
        "nettx card decrypt --state bob.card.json --peer holder:alice@example.org "
        "--in order.box --context order-1",
    ),
    ("card", "change-pin"): ("nettx card change-pin --state alice.card.json",),
    ("card", "unblock"): (
        "nettx card unblock --state alice.card.json --ask-new-pin",
        "nettx card unblock --reader pcsc:0 --puk-file puk.txt --new-pin-file new-pin.txt",
    ),
    ("demo",): ("nettx demo", "nettx demo --home ./demo --k 64"),
    ("conformance",): (
        "nettx conformance --state alice.card.json",
        "nettx conformance --reader pcsc:0 --ask-pin --report results.xml",
        "nettx conformance --list",
        "nettx conformance --reader pcsc:0 --json",
        "nettx conformance --reader pcsc:0 --aid none --strict",
    ),
    ("seller", "serve"): (
        "nettx seller serve --key rows/seller_shop.example.row.json --db shop.sqlite "
        "--listen 127.0.0.1:7000 --catalogue catalogue.json --issuer 127.0.0.1:7001 "
        "--issuer-id issuer:bank.example --delivery 127.0.0.1:7002 "
        "--delivery-id delivery:post.example",
    ),
    ("issuer", "serve"): (
        "nettx issuer serve --key rows/issuer_bank.example.row.json --db bank.sqlite "
        "--listen 127.0.0.1:7001",
    ),
    ("issuer", "add-account"): (
        "nettx issuer add-account --db bank.sqlite --expiry 09/29 "
        "--holder holder:alice@example.org --name 'Alice Martin' --balance 50000",
    ),
    ("issuer", "accounts"): (
        "nettx issuer accounts --db bank.sqlite",
        "nettx issuer accounts --db bank.sqlite --json",
    ),
    ("delivery", "serve"): (
        "nettx delivery serve --key rows/delivery_post.example.row.json --db post.sqlite "
        "--listen 127.0.0.1:7002",
    ),
    ("buy",): (
        "nettx buy --state alice.card.json --seller 127.0.0.1:7000 "
        "--seller-id seller:shop.example --issuer-id issuer:bank.example --item A-100 "
        "--expiry 09/29 --name 'Alice Martin' --deliver-to 'Lyon' --max-amount 49.90",
        "nettx --state alice.card.json buy --seller 127.0.0.1:7000 "
        "--seller-id seller:shop.example --issuer-id issuer:bank.example --item B-200:2 "
        "--expiry 09/29 --name 'Alice Martin' --deliver-to 'Lyon' --max-amount 60 --json",
    ),
}


def epilog(lines: tuple[str, ...]) -> str:
    # \b: click keeps the block's line breaks as written
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def leaf_commands(group: click.Group,
                  path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from leaf_commands(command, (*path, name))
        else:
            yield (*path, name), command


def add_examples(main: click.Group) -> None:
    """Give every command without an epilog of its own the examples above."""
    for path, command in leaf_commands(main):
        if not command.epilog and path in EXAMPLES:
            command.epilog = epilog(EXAMPLES[path])
