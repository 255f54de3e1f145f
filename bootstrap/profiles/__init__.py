"""What a profile is: profile files parsed into frozen dataclasses, the project and user
catalogs, and the keras.json values a profile stands for.
"""
