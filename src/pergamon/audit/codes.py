"""Coded values of DICOM PS3.15 A.5 audit messages (PS3.16 CID 400-405 and the RFC 3881 codes).

ITI TF-2 §3.20.7.1.3: RFC 3881 integer codes carry `codeSystemName="RFC-3881"`; DICOM codes "DCM".
"""

from __future__ import annotations

from typing import NamedTuple


class Code(NamedTuple):
    """A coded value (PS3.15 A.5.1 CodedValueType): csd-code, codeSystemName, originalText."""

    code: str
    system: str
    text: str


def _dcm(code: str, text: str) -> Code:
    return Code(code, "DCM", text)


def _rfc3881(code: str, text: str) -> Code:
    return Code(code, "RFC-3881", text)


# EventID, DICOM CID 400 (PS3.15 A.5.3).
APPLICATION_ACTIVITY = _dcm("110100", "Application Activity")
AUDIT_LOG_USED = _dcm("110101", "Audit Log Used")
BEGIN_TRANSFERRING = _dcm("110102", "Begin Transferring DICOM Instances")
INSTANCES_ACCESSED = _dcm("110103", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = _dcm("110104", "DICOM Instances Transferred")
STUDY_DELETED = _dcm("110105", "DICOM Study Deleted")
EXPORT = _dcm("110106", "Export")
IMPORT = _dcm("110107", "Import")
ORDER_RECORD = _dcm("110109", "Order Record")
PATIENT_RECORD = _dcm("110110", "Patient Record")
PROCEDURE_RECORD = _dcm("110111", "Procedure Record")
QUERY = _dcm("110112", "Query")
SECURITY_ALERT = _dcm("110113", "Security Alert")
USER_AUTHENTICATION = _dcm("110114", "User Authentication")

# EventTypeCode: CID 401 (application activity), CID 403 (security alert), CID 402 (authentication).
APPLICATION_START = _dcm("110120", "Application Start")
APPLICATION_STOP = _dcm("110121", "Application Stop")
LOGIN = _dcm("110122", "Login")
LOGOUT = _dcm("110123", "Logout")
NODE_AUTHENTICATION = _dcm("110126", "Node Authentication")
EMERGENCY_OVERRIDE_STARTED = _dcm("110127", "Emergency Override Started")
NETWORK_CONFIGURATION = _dcm("110128", "Network Configuration")
SECURITY_CONFIGURATION = _dcm("110129", "Security Configuration")
HARDWARE_CONFIGURATION = _dcm("110130", "Hardware Configuration")
SOFTWARE_CONFIGURATION = _dcm("110131", "Software Configuration")
USE_OF_RESTRICTED_FUNCTION = _dcm("110132", "Use of Restricted Function")
AUDIT_RECORDING_STOPPED = _dcm("110133", "Audit Recording Stopped")
AUDIT_RECORDING_STARTED = _dcm("110134", "Audit Recording Started")
OBJECT_SECURITY_ATTRIBUTES_CHANGED = _dcm("110135", "Object Security Attributes Changed")
SECURITY_ROLES_CHANGED = _dcm("110136", "Security Roles Changed")
USER_SECURITY_ATTRIBUTES_CHANGED = _dcm("110137", "User security Attributes Changed")

# RoleIDCode, CID 402 (PS3.15 A.5.2.1).
ROLE_APPLICATION = _dcm("110150", "Application")
ROLE_APPLICATION_LAUNCHER = _dcm("110151", "Application Launcher")
ROLE_DESTINATION = _dcm("110152", "Destination Role ID")
ROLE_SOURCE = _dcm("110153", "Source Role ID")
ROLE_DESTINATION_MEDIA = _dcm("110154", "Destination Media")
ROLE_SOURCE_MEDIA = _dcm("110155", "Source Media")

# MediaType, CID 405.
MEDIA_CD = _dcm("110032", "CD")
MEDIA_DVD = _dcm("110033", "DVD")
MEDIA_URI = _dcm("110037", "URI")
MEDIA_USB = _dcm("110030", "USB Disk Emulation")

# ParticipantObjectIDTypeCode: RFC 3881 codes and DICOM CID 404.
ID_PATIENT_NUMBER = _rfc3881("2", "Patient Number")
ID_REPORT_NUMBER = _rfc3881("9", "Report Number")
ID_SEARCH_CRITERIA = _rfc3881("10", "Search Criteria")
ID_USER_IDENTIFIER = _rfc3881("11", "User Identifier")
ID_URI = _rfc3881("12", "URI")
ID_STUDY_INSTANCE_UID = _dcm("110180", "Study Instance UID")
ID_SOP_CLASS_UID = _dcm("110181", "SOP Class UID")
ID_NODE = _dcm("110182", "Node ID")

# AuditSourceTypeCode (PS3.15 A.5.1; RFC 3881 5.4 values).
SOURCE_WEB_SERVER = _dcm("3", "Web Server Process")
SOURCE_APPLICATION_SERVER = _dcm("4", "Application Server Process")
SOURCE_SECURITY_SERVER = _dcm("6", "Security Server")

# EventOutcomeIndicator (PS3.15 A.5.1).
SUCCESS = 0
MINOR_FAILURE = 4
SERIOUS_FAILURE = 8
MAJOR_FAILURE = 12
OUTCOMES = (SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE, MAJOR_FAILURE)
ACTIONS = ("C", "R", "U", "D", "E")
