"""The reader side: reader drivers, the APDU protocol stack and the card session API."""
