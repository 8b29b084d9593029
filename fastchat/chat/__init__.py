"""The chat logic, one module per concern, behind the :class:`Chat` facade."""

from fastchat.chat.facade import Chat
from fastchat.chat.rooms import Room
from fastchat.chat.users import User

__all__ = ["Chat", "Room", "User"]
