"""The card's ISO/IEC 7816-4 file structure: what generic middleware looks for first.

Theory of operation. A multi-application card shows a master file (MF, `3F00`) holding
EF.DIR (`2F00`, the list of applications, 8.2.1.1) and EF.ATR/INFO (`2F01`, what the ATR
could not say). Tools such as OpenSC select the MF, read EF.DIR and then select each listed
application by its AID; without an MF they give up ("unable to select MF"). The nettx
application DF (ADF) hangs under the MF and is reached by its AID only; it holds the PKCS#15
files (EF.ODF `5031`, EF.TokenInfo `5032`, EF.AODF `4401`) that let a PKCS#15 reader bind to
the application and see its PIN. Every file is a read-only transparent EF whose bytes are
fixed at manufacture, so READ BINARY is the only access and nothing here is secret.

Sans-IO, as the applet: the tree is an immutable value built from the card's serial,
`select` and `read_binary` are pure functions from (tree, selection, command fields) to a new
selection and the response, raising `CardError` before anything changes. Where the card
stands (current DF, current file) is a `Selection` the applet keeps in its volatile state.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from card_applet.sw import SW, CardError
from card_applet.tlv import tlv
from card_applet.vocabulary import (
    DESCRIPTOR_DF,
    DESCRIPTOR_TRANSPARENT_EF,
    LIFE_CYCLE_OPERATIONAL,
    MF_ID,
    TAG_AID,
    TAG_APPLICATION_LABEL,
    TAG_APPLICATION_TEMPLATE,
    TAG_CARD_CAPABILITIES,
    TAG_DESCRIPTOR,
    TAG_DF_NAME,
    TAG_EXTENDED_LENGTH,
    TAG_FCI,
    TAG_FCP,
    TAG_FILE_ID,
    TAG_LIFE_CYCLE,
    TAG_SFI,
    TAG_SIZE,
    Answer,
    FileId,
    SelectBy,
)

APPLICATION_LABEL = b"nettx EP0791901"  # EF.DIR tag 50 and the PKCS#15 token label (<= 16)
MANUFACTURER = b"nettx"
SFI_CURRENT_EF = 0  # ISO 7816-4 5.3.1.1: short EF identifier 0 means the current EF
# ISO 7816-4 12.1.1.9, three software function bytes: selection by full and partial DF name,
# by path, by file identifier, short EF identifiers; one-byte data units; command chaining
# and extended Lc/Le, no logical channels
CARD_CAPABILITIES = bytes((0xF4, 0x01, 0xC0))


@dataclass(frozen=True, slots=True)
class ElementaryFile:
    fid: int
    content: bytes
    sfi: int | None = None


@dataclass(frozen=True, slots=True)
class DedicatedFile:
    fid: int | None  # None: reached by its DF name only (the application)
    name: bytes | None
    efs: tuple[ElementaryFile, ...] = ()
    dfs: tuple[DedicatedFile, ...] = ()


File = ElementaryFile | DedicatedFile


@dataclass(frozen=True, slots=True)
class FileTree:
    mf: DedicatedFile
    application: DedicatedFile

    def parent(self, df: DedicatedFile) -> DedicatedFile | None:
        return None if df is self.mf else self.mf  # two levels: MF and the ADF


@dataclass(frozen=True, slots=True)
class Selection:
    """ISO 7816-4 5.3.1: the current DF and the current file (`None` after reset, when the
    MF is the current DF and no file has been selected)."""

    df: DedicatedFile
    file: File | None = None


@dataclass(frozen=True, slots=True)
class Read:
    selection: Selection
    data: bytes
    short: bool  # fewer than Ne bytes were left: ISO 7816-4's warning 6282


def efs_of(df: DedicatedFile) -> dict[int, ElementaryFile]:
    return {ef.fid: ef for ef in df.efs}


def pkcs15_files(serial: bytes) -> tuple[ElementaryFile, ...]:
    """The PKCS#15 (ISO/IEC 7816-15) minimum a reader needs to bind to the application:
    EF.ODF pointing at an EF.AODF that describes the PIN, and EF.TokenInfo."""
    odf = tlv(0xA8, tlv(0x30, tlv(0x04, FileId.EF_AODF.to_bytes(2, "big"))))  # authObjects
    pin_attributes = (
        tlv(0x03, bytes((0x02, 0x4C)))  # pinFlags: local, initialized, needs-padding
        + tlv(0x0A, b"\x01")  # pinType: ascii-numeric
        + tlv(0x02, b"\x04")  # minLength
        + tlv(0x02, b"\x08")  # storedLength: pin.BLOCK_SIZE
        + tlv(0x02, b"\x08")  # maxLength
        + tlv(0x80, b"\x00\x81")  # pinReference: VERIFY P2 81 (DER: positive, so 00 81)
        + tlv(0x04, b"\xff")  # padChar
    )
    aodf = tlv(0x30, tlv(0x30, tlv(0x0C, b"PIN") + tlv(0x03, b"\x06\x40"))  # modifiable
               + tlv(0x30, tlv(0x04, b"\x01"))  # authId
               + tlv(0xA1, tlv(0x30, pin_attributes)))
    token_info = tlv(0x30, tlv(0x02, b"\x00") + tlv(0x04, serial) + tlv(0x0C, MANUFACTURER)
                     + tlv(0x80, APPLICATION_LABEL) + tlv(0x03, b"\x07\x80"))  # readOnly
    return (ElementaryFile(FileId.EF_ODF, odf), ElementaryFile(FileId.EF_TOKEN_INFO, token_info),
            ElementaryFile(FileId.EF_AODF, aodf))


@lru_cache(maxsize=8)
def card_files(aid: bytes, serial: bytes, max_nc: int, max_ne: int) -> FileTree:
    """The file tree of a card; every argument is fixed at manufacture."""
    ef_dir = tlv(TAG_APPLICATION_TEMPLATE, tlv(TAG_AID, aid)
                 + tlv(TAG_APPLICATION_LABEL, APPLICATION_LABEL))
    ef_atr = (tlv(TAG_CARD_CAPABILITIES, CARD_CAPABILITIES)
              + tlv(TAG_EXTENDED_LENGTH, _integer(max_nc) + _integer(max_ne)))
    application = DedicatedFile(None, aid, pkcs15_files(serial))
    mf = DedicatedFile(MF_ID, None, (ElementaryFile(FileId.EF_DIR, ef_dir, sfi=30),
                                     ElementaryFile(FileId.EF_ATR, ef_atr, sfi=29)),
                       (application,))
    return FileTree(mf, application)


def _integer(n: int) -> bytes:
    """A DER INTEGER (tag 02), as 7F66 nests them."""
    return tlv(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big"))


# -- SELECT by file identifier and by path ----------------------------------------------------


def select(tree: FileTree, here: Selection, p1: int, data: bytes) -> Selection:
    """SELECT with P1 = 00, 01, 02, 03, 08 or 09 (P2 is `check_p2`'s)."""
    if p1 == SelectBy.PARENT_DF:
        if data:
            raise CardError(SW.LC_INCONSISTENT)
        parent = tree.parent(here.df)
        if parent is None:
            raise CardError(SW.FILE_NOT_FOUND)  # the MF has no parent
        return Selection(parent, parent)
    if p1 == SelectBy.FILE_ID and not data:  # ISO 7816-4 table 39: no data selects the MF
        return Selection(tree.mf, tree.mf)
    fids = _identifiers(data)
    if p1 in (SelectBy.FILE_ID, SelectBy.CHILD_DF, SelectBy.EF_UNDER_CURRENT):
        if len(fids) != 1:
            raise CardError(SW.LC_INCONSISTENT)
        return _by_identifier(tree, here.df, fids[0], p1)
    if p1 == SelectBy.PATH_FROM_MF:
        return _walk(tree.mf, fids)
    if p1 == SelectBy.PATH_FROM_CURRENT:
        return _walk(here.df, fids)
    raise CardError(SW.INCORRECT_P1P2)


def check_p2(p2: int) -> Answer:
    """Occurrence bits mean nothing for an identifier or a path: only 00, 04 and 0C."""
    try:
        return Answer(p2)
    except ValueError as exc:
        raise CardError(SW.INCORRECT_P1P2) from exc


def _identifiers(data: bytes) -> list[int]:
    if not data or len(data) % 2:
        raise CardError(SW.LC_INCONSISTENT)
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def _by_identifier(tree: FileTree, df: DedicatedFile, fid: int, p1: int) -> Selection:
    if p1 == SelectBy.FILE_ID and fid == MF_ID:
        return Selection(tree.mf, tree.mf)
    if p1 != SelectBy.CHILD_DF and fid in efs_of(df):
        return Selection(df, efs_of(df)[fid])
    if p1 != SelectBy.EF_UNDER_CURRENT:
        for child in df.dfs:
            if child.fid == fid:
                return Selection(child, child)
    # ISO 7816-4 7.1.1: P1 = 00 also searches the parent DF and its children
    parent = tree.parent(df)
    if p1 == SelectBy.FILE_ID and parent is not None:
        if parent.fid == fid:
            return Selection(parent, parent)
        if fid in efs_of(parent):
            return Selection(parent, efs_of(parent)[fid])
    raise CardError(SW.FILE_NOT_FOUND)


def _walk(start: DedicatedFile, fids: list[int]) -> Selection:
    """A path (ISO 7816-4 5.3.1.2): DF identifiers, then a DF or an EF identifier."""
    df = start
    for i, fid in enumerate(fids):
        child = next((d for d in df.dfs if d.fid == fid), None)
        if child is not None:
            df = child
            continue
        ef = efs_of(df).get(fid)
        if ef is None or i != len(fids) - 1:
            raise CardError(SW.FILE_NOT_FOUND)
        return Selection(df, ef)
    return Selection(df, df)


def control_parameters(file: File) -> bytes:
    """The FCP data objects (without the 62 / 6F template)."""
    if isinstance(file, ElementaryFile):
        out = (tlv(TAG_SIZE, len(file.content).to_bytes(2, "big"))
               + tlv(TAG_DESCRIPTOR, bytes((DESCRIPTOR_TRANSPARENT_EF,)))
               + tlv(TAG_FILE_ID, file.fid.to_bytes(2, "big")))
        if file.sfi is not None:
            out += tlv(TAG_SFI, bytes((file.sfi << 3,)))  # b8-b4 carry the SFI
    else:
        out = tlv(TAG_DESCRIPTOR, bytes((DESCRIPTOR_DF,)))
        if file.fid is not None:
            out += tlv(TAG_FILE_ID, file.fid.to_bytes(2, "big"))
        if file.name is not None:
            out += tlv(TAG_DF_NAME, file.name)
    return out + tlv(TAG_LIFE_CYCLE, bytes((LIFE_CYCLE_OPERATIONAL,)))


def select_response(file: File, answer: Answer) -> bytes:
    if answer == Answer.NOTHING:
        return b""
    return tlv(TAG_FCP if answer == Answer.FCP else TAG_FCI, control_parameters(file))


# -- READ BINARY ------------------------------------------------------------------------------


def read_binary(here: Selection, p1: int, p2: int, data: bytes, ne: int | None) -> Read:
    """ISO 7816-4 11.2.3, transparent EFs only. P1 b8 = 0: P1-P2 is a 15-bit offset in the
    current EF; P1 b8 = 1: b5-b1 a short EF identifier in the current DF and P2 the offset
    (the EF becomes the current file)."""
    if data or ne is None:
        raise CardError(SW.WRONG_LENGTH)  # case 2: Le and nothing else
    if p1 & 0x80:
        if p1 & 0x60:
            raise CardError(SW.INCORRECT_P1P2)
        sfi, offset = p1 & 0x1F, p2
        ef = _current_ef(here) if sfi == SFI_CURRENT_EF else _by_sfi(here.df, sfi)
    else:
        offset = (p1 << 8) | p2
        ef = _current_ef(here)
    if offset >= len(ef.content):
        raise CardError(SW.WRONG_P1P2)  # 6B00: the offset names no byte of the EF
    chunk = ef.content[offset : offset + ne]
    return Read(Selection(here.df, ef), chunk, short=len(chunk) < ne)


def _current_ef(here: Selection) -> ElementaryFile:
    if here.file is None:
        raise CardError(SW.NO_CURRENT_EF)
    if not isinstance(here.file, ElementaryFile):
        raise CardError(SW.INCOMPATIBLE_FILE_STRUCTURE)  # a DF has no bytes to read
    return here.file


def _by_sfi(df: DedicatedFile, sfi: int) -> ElementaryFile:
    for ef in df.efs:
        if ef.sfi == sfi:
            return ef
    raise CardError(SW.FILE_NOT_FOUND)
