from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PackedSocketKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PACKED_SOCKET_KIND_UNSPECIFIED: _ClassVar[PackedSocketKind]
    PACKED_SOCKET_KIND_HELLO: _ClassVar[PackedSocketKind]
    PACKED_SOCKET_KIND_REQUEST: _ClassVar[PackedSocketKind]
    PACKED_SOCKET_KIND_REPLY: _ClassVar[PackedSocketKind]
    PACKED_SOCKET_KIND_STATUS: _ClassVar[PackedSocketKind]
PACKED_SOCKET_KIND_UNSPECIFIED: PackedSocketKind
PACKED_SOCKET_KIND_HELLO: PackedSocketKind
PACKED_SOCKET_KIND_REQUEST: PackedSocketKind
PACKED_SOCKET_KIND_REPLY: PackedSocketKind
PACKED_SOCKET_KIND_STATUS: PackedSocketKind

class Variable(_message.Message):
    __slots__ = ("name", "low", "high", "description", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    low: float
    high: float
    description: str
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., low: _Optional[float] = ..., high: _Optional[float] = ..., description: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class OpenRequest(_message.Message):
    __slots__ = ("protocol", "client", "action_names", "lease_seconds", "integer_actions")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    ACTION_NAMES_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INTEGER_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    protocol: str
    client: str
    action_names: _containers.RepeatedScalarFieldContainer[str]
    lease_seconds: float
    integer_actions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, protocol: _Optional[str] = ..., client: _Optional[str] = ..., action_names: _Optional[_Iterable[str]] = ..., lease_seconds: _Optional[float] = ..., integer_actions: _Optional[_Iterable[str]] = ...) -> None: ...

class OpenReply(_message.Message):
    __slots__ = ("session_id", "protocol", "server", "sim_name", "states", "actions", "config", "lease_seconds", "seedable", "max_message_bytes", "packed_socket")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    SIM_NAME_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SEEDABLE_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PACKED_SOCKET_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    protocol: str
    server: str
    sim_name: str
    states: _containers.RepeatedCompositeFieldContainer[Variable]
    actions: _containers.RepeatedCompositeFieldContainer[Variable]
    config: _containers.RepeatedCompositeFieldContainer[Variable]
    lease_seconds: float
    seedable: bool
    max_message_bytes: int
    packed_socket: bool
    def __init__(self, session_id: _Optional[str] = ..., protocol: _Optional[str] = ..., server: _Optional[str] = ..., sim_name: _Optional[str] = ..., states: _Optional[_Iterable[_Union[Variable, _Mapping]]] = ..., actions: _Optional[_Iterable[_Union[Variable, _Mapping]]] = ..., config: _Optional[_Iterable[_Union[Variable, _Mapping]]] = ..., lease_seconds: _Optional[float] = ..., seedable: _Optional[bool] = ..., max_message_bytes: _Optional[int] = ..., packed_socket: _Optional[bool] = ...) -> None: ...

class SessionRef(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ResetRequest(_message.Message):
    __slots__ = ("session_id", "config", "seed", "seq")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    config: _struct_pb2.Struct
    seed: int
    seq: int
    def __init__(self, session_id: _Optional[str] = ..., config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., seed: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...

class StepRequest(_message.Message):
    __slots__ = ("session_id", "action", "seq")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    action: _containers.RepeatedScalarFieldContainer[float]
    seq: int
    def __init__(self, session_id: _Optional[str] = ..., action: _Optional[_Iterable[float]] = ..., seq: _Optional[int] = ...) -> None: ...

class Transition(_message.Message):
    __slots__ = ("states", "terminated", "truncated", "nonfinite", "reward", "step", "sim_seconds")
    STATES_FIELD_NUMBER: _ClassVar[int]
    TERMINATED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    NONFINITE_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SIM_SECONDS_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[float]
    terminated: bool
    truncated: bool
    nonfinite: _containers.RepeatedScalarFieldContainer[int]
    reward: float
    step: int
    sim_seconds: float
    def __init__(self, states: _Optional[_Iterable[float]] = ..., terminated: _Optional[bool] = ..., truncated: _Optional[bool] = ..., nonfinite: _Optional[_Iterable[int]] = ..., reward: _Optional[float] = ..., step: _Optional[int] = ..., sim_seconds: _Optional[float] = ...) -> None: ...

class TransitionReply(_message.Message):
    __slots__ = ("transition",)
    TRANSITION_FIELD_NUMBER: _ClassVar[int]
    transition: Transition
    def __init__(self, transition: _Optional[_Union[Transition, _Mapping]] = ...) -> None: ...

class StatesReply(_message.Message):
    __slots__ = ("states",)
    STATES_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, states: _Optional[_Iterable[float]] = ...) -> None: ...

class TerminationReply(_message.Message):
    __slots__ = ("terminated", "truncated")
    TERMINATED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    terminated: bool
    truncated: bool
    def __init__(self, terminated: _Optional[bool] = ..., truncated: _Optional[bool] = ...) -> None: ...

class CloseReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PackedRequest(_message.Message):
    __slots__ = ("session_ids", "actions", "seqs", "resets", "slot_timeout_seconds")
    SESSION_IDS_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    SEQS_FIELD_NUMBER: _ClassVar[int]
    RESETS_FIELD_NUMBER: _ClassVar[int]
    SLOT_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    session_ids: _containers.RepeatedScalarFieldContainer[str]
    actions: _containers.RepeatedScalarFieldContainer[float]
    seqs: _containers.RepeatedScalarFieldContainer[int]
    resets: _containers.RepeatedCompositeFieldContainer[PackedReset]
    slot_timeout_seconds: float
    def __init__(self, session_ids: _Optional[_Iterable[str]] = ..., actions: _Optional[_Iterable[float]] = ..., seqs: _Optional[_Iterable[int]] = ..., resets: _Optional[_Iterable[_Union[PackedReset, _Mapping]]] = ..., slot_timeout_seconds: _Optional[float] = ...) -> None: ...

class PackedReset(_message.Message):
    __slots__ = ("slot", "config", "seed")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    slot: int
    config: _struct_pb2.Struct
    seed: int
    def __init__(self, slot: _Optional[int] = ..., config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., seed: _Optional[int] = ...) -> None: ...

class PackedError(_message.Message):
    __slots__ = ("slot", "code", "message")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    slot: int
    code: int
    message: str
    def __init__(self, slot: _Optional[int] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class PackedReply(_message.Message):
    __slots__ = ("state_width", "states", "terminated", "truncated", "steps", "sim_seconds", "rewards", "nonfinite", "errors")
    STATE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    TERMINATED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SIM_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    NONFINITE_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    state_width: int
    states: _containers.RepeatedScalarFieldContainer[float]
    terminated: _containers.RepeatedScalarFieldContainer[bool]
    truncated: _containers.RepeatedScalarFieldContainer[bool]
    steps: _containers.RepeatedScalarFieldContainer[int]
    sim_seconds: _containers.RepeatedScalarFieldContainer[float]
    rewards: _containers.RepeatedScalarFieldContainer[float]
    nonfinite: _containers.RepeatedScalarFieldContainer[int]
    errors: _containers.RepeatedCompositeFieldContainer[PackedError]
    def __init__(self, state_width: _Optional[int] = ..., states: _Optional[_Iterable[float]] = ..., terminated: _Optional[_Iterable[bool]] = ..., truncated: _Optional[_Iterable[bool]] = ..., steps: _Optional[_Iterable[int]] = ..., sim_seconds: _Optional[_Iterable[float]] = ..., rewards: _Optional[_Iterable[float]] = ..., nonfinite: _Optional[_Iterable[int]] = ..., errors: _Optional[_Iterable[_Union[PackedError, _Mapping]]] = ...) -> None: ...

class PackedSocketHello(_message.Message):
    __slots__ = ("protocol", "token")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    protocol: str
    token: str
    def __init__(self, protocol: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class PackedSocketStatus(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...
