"""Reading HL7 v2 fields by position (segment-field-repetition-component-subcomponent), absent ones as "".

python-hl7's containers raise on a missing repetition or component and nest differently
depending on which separators a field contains, so handlers read fields through `Segment`,
which splits the segment's text with the message's own delimiters and unescapes each value.
"""

from __future__ import annotations

from dataclasses import dataclass

import hl7


@dataclass(frozen=True)
class Segment:
    """One segment of a parsed message; `get(n)` is field n as the standard numbers it (SEG-n).

    Except in MSH, whose MSH-1 is the field separator itself: there MSH-n is `get(n - 1)`.
    """

    name: str
    fields: tuple[str, ...]
    sequence: int  # 1-based occurrence of this segment name in the message
    message: hl7.Message

    def raw(self, number: int) -> str:
        """Field `number` as sent (escaped, with its repetitions and components)."""
        return self.fields[number] if 0 < number < len(self.fields) else ""

    def repetitions(self, number: int) -> list[str]:
        """The repetitions of field `number`, raw; an empty field has none."""
        raw = self.raw(number)
        return [rep for rep in raw.split(self.message.separators[2])] if raw else []

    def get(self, number: int, component: int = 1, subcomponent: int = 1, repetition: int = 1) -> str:
        """One unescaped value, stripped; "" when absent."""
        reps = self.repetitions(number)
        if repetition > len(reps):
            return ""
        return self.part(reps[repetition - 1], component, subcomponent)

    def part(self, raw: str, component: int = 1, subcomponent: int = 1) -> str:
        """A component (and subcomponent) of one raw repetition, unescaped and stripped."""
        components = raw.split(self.message.separators[3])
        if component > len(components):
            return ""
        subcomponents = components[component - 1].split(self.message.separators[4])
        if subcomponent > len(subcomponents):
            return ""
        return str(self.message.unescape(subcomponents[subcomponent - 1])).strip()


def segments(message: hl7.Message, name: str) -> list[Segment]:
    """Every segment called `name`, in message order."""
    found: list[Segment] = []
    for segment in message:
        text = str(segment)
        fields = tuple(text.split(message.separators[1]))
        if fields[0] == name:
            found.append(Segment(name, fields, len(found) + 1, message))
    return found


def first(message: hl7.Message, name: str) -> Segment | None:
    """The first segment called `name`, if any."""
    found = segments(message, name)
    return found[0] if found else None


def groups(message: hl7.Message, leader: str, members: tuple[str, ...]) -> list[dict[str, list[Segment]]]:
    """The message cut into groups that each start at a `leader` segment and collect the `members` after it.

    A member before the first leader is not in any group; segment names outside `members` are skipped.
    """
    found: list[dict[str, list[Segment]]] = []
    counts: dict[str, int] = {}
    for segment in message:
        fields = tuple(str(segment).split(message.separators[1]))
        name = fields[0]
        counts[name] = counts.get(name, 0) + 1
        if name == leader:
            found.append({leader: [Segment(name, fields, counts[name], message)]})
        elif name in members and found:
            found[-1].setdefault(name, []).append(Segment(name, fields, counts[name], message))
    return found
