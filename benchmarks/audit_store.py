"""CPU to parse and store received audit messages in the audit repository, per message.

Not the benchmark of record; a tool for `audit.repository.store`. BATCH copies of one DICOM
Instances Transferred message (as the archive sends for a stored study) go through `row` and
`store` together, as the repository's writer thread takes a batch, into a fresh index (SQLite, or
PostgreSQL with PERGAMON_TEST_DB=postgresql, as in the test suite). The first batch size listed
also warms the process up (statement caches): read the later lines. For an A/B, run it again with
PYTHONPATH pointing at another tree's src/ (e.g. a `git archive` of the previous commit).

Usage: .venv/bin/python benchmarks/audit_store.py [--batch 64,1,64] [--messages 640]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

MESSAGE = (
    b'<85>1 2026-12-07T12:23:08.389945Z vm pergamon 1 IHE+RFC-3881 - <AuditMessage><EventIdentification '
    b'EventActionCode="C" EventDateTime="2026-12-07T12:23:07.361Z" EventOutcomeIndicator="0"><EventID '
    b'csd-code="110104" codeSystemName="DCM" originalText="DICOM Instances Transferred" /></EventIdentification>'
    b'<ActiveParticipant UserID="STORESCU" AlternativeUserID="AETITLES=STORESCU" UserIsRequestor="true" '
    b'NetworkAccessPointID="127.0.0.1" NetworkAccessPointTypeCode="2"><RoleIDCode csd-code="110153" '
    b'codeSystemName="DCM" originalText="Source Role ID" /></ActiveParticipant><ActiveParticipant '
    b'UserID="PERGAMON" AlternativeUserID="AETITLES=PERGAMON" UserIsRequestor="false" NetworkAccessPointID="vm" '
    b'NetworkAccessPointTypeCode="1"><RoleIDCode csd-code="110152" codeSystemName="DCM" originalText="Destination '
    b'Role ID" /></ActiveParticipant><AuditSourceIdentification AuditSourceID="PERGAMON"><AuditSourceTypeCode '
    b'csd-code="4" codeSystemName="DCM" originalText="Application Server Process" /></AuditSourceIdentification>'
    b'<ParticipantObjectIdentification ParticipantObjectID="P000023489" ParticipantObjectTypeCode="1" '
    b'ParticipantObjectTypeCodeRole="1"><ParticipantObjectIDTypeCode csd-code="2" codeSystemName="RFC-3881" '
    b'originalText="Patient Number" /></ParticipantObjectIdentification><ParticipantObjectIdentification '
    b'ParticipantObjectID="2.25.16291215443309823028285805198674028207" ParticipantObjectTypeCode="2" '
    b'ParticipantObjectTypeCodeRole="3"><ParticipantObjectIDTypeCode csd-code="110180" codeSystemName="DCM" '
    b'originalText="Study Instance UID" /><ParticipantObjectDescription><Accession Number="A0000023489" />'
    b'<SOPClass UID="1.2.840.10008.5.1.4.1.1.1.2" NumberOfInstances="1" /></ParticipantObjectDescription>'
    b"</ParticipantObjectIdentification></AuditMessage>"
)


def main() -> None:
    from conftest import index_database, make_settings

    from pergamon.archive.service import Archive
    from pergamon.audit import repository

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", default="64,1,64")
    parser.add_argument("--messages", type=int, default=640)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, index_database(Path(tmp)) as url:
        archive = Archive.open(make_settings(Path(tmp) / "data", url))
        try:
            for batch in map(int, args.batch.split(",")):
                items = [repository.Received(MESSAGE, "udp", "127.0.0.1:514", time.time(), len(MESSAGE))] * batch
                rounds = max(1, args.messages // batch)
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(rounds):
                    repository.store(archive, [repository.row(item) for item in items])
                n = rounds * batch
                print(
                    f"{archive.db.engine.dialect.name}, batches of {batch}: "
                    f"{1000 * (time.process_time() - cpu) / n:.3f} ms CPU, "
                    f"{1000 * (time.perf_counter() - wall) / n:.3f} ms wall per message"
                )
        finally:
            archive.close()


if __name__ == "__main__":
    main()
