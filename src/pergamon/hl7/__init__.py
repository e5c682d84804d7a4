"""HL7 v2 door: MLLP listener and client, acknowledgements, the message log, and the handlers
for patient updates (ADT, RAD-12), orders (ORM/OMI, RAD-4/13) and PIX (ITI-9/10)."""
