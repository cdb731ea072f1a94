-- The sqlarbiter demo database: concerts (singers, stadiums, concerts, who sang where).
-- Built by planner/demo.py into <data_dir>/demo.sqlite on first use. SQLite dialect.
PRAGMA foreign_keys = ON;

CREATE TABLE stadium (
    stadium_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    location TEXT NOT NULL,
    capacity INTEGER NOT NULL,
    opened_year INTEGER
);

CREATE TABLE singer (
    singer_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    country TEXT NOT NULL,
    age INTEGER NOT NULL,
    genre TEXT,
    is_male INTEGER NOT NULL CHECK (is_male IN (0, 1))
);

CREATE TABLE concert (
    concert_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    theme TEXT,
    stadium_id INTEGER NOT NULL REFERENCES stadium (stadium_id),
    year INTEGER NOT NULL,
    ticket_price REAL
);

CREATE TABLE singer_in_concert (
    concert_id INTEGER NOT NULL REFERENCES concert (concert_id),
    singer_id INTEGER NOT NULL REFERENCES singer (singer_id),
    PRIMARY KEY (concert_id, singer_id)
);

INSERT INTO stadium VALUES
    (1, 'Harbor Arena', 'Portsmouth', 12000, 1998),
    (2, 'Northfield Park', 'Leeds', 35000, 1975),
    (3, 'Riverside Dome', 'Bristol', 18500, 2004),
    (4, 'Castle Grounds', 'Edinburgh', 27000, 1989),
    (5, 'Lakeside Bowl', 'Cardiff', 9000, 2011),
    (6, 'Eastgate Hall', 'Norwich', 4500, 1962),
    (7, 'Summit Stadium', 'Glasgow', 51000, 1994),
    (8, 'Old Mill Theatre', 'York', 2200, 1921),
    (9, 'Meadow Field', 'Exeter', 15000, NULL),
    (10, 'Pier Pavilion', 'Brighton', 6800, 2016);

INSERT INTO singer VALUES
    (1, 'Ada Lark', 'United Kingdom', 29, 'pop', 0),
    (2, 'Bruno Vale', 'Italy', 41, 'opera', 1),
    (3, 'Chloe Imara', 'France', 34, 'jazz', 0),
    (4, 'Dev Patel', 'India', 26, 'pop', 1),
    (5, 'Elena Sorrento', 'Italy', 52, 'opera', 0),
    (6, 'Finn Okafor', 'Ireland', 31, 'folk', 1),
    (7, 'Grace Lindqvist', 'Sweden', 23, 'pop', 0),
    (8, 'Hiro Tanaka', 'Japan', 38, 'rock', 1),
    (9, 'Isla Moreau', 'France', 30, 'jazz', 0),
    (10, 'Jonas Becker', 'Germany', 45, 'rock', 1),
    (11, 'Kofi Mensah', 'Ghana', 27, 'afrobeats', 1),
    (12, 'Lucia Ferreira', 'Portugal', 36, 'fado', 0),
    (13, 'Mateo Ruiz', 'Spain', 33, NULL, 1),
    (14, 'Nora Kelly', 'Ireland', 19, 'folk', 0),
    (15, 'Omar Haddad', 'Morocco', 48, 'jazz', 1);

INSERT INTO concert VALUES
    (1, 'Spring Lights', 'Free choice', 1, 2022, 35.0),
    (2, 'Summer Nights', 'Open air', 2, 2022, 49.5),
    (3, 'Opera Gala', 'Classics', 4, 2023, 80.0),
    (4, 'Jazz on the River', 'Jazz', 3, 2023, 42.0),
    (5, 'Folk Roots', 'Folk', 6, 2023, 25.0),
    (6, 'Rock the Summit', 'Rock', 7, 2024, 65.0),
    (7, 'Harbor Sounds', 'Free choice', 1, 2024, 30.0),
    (8, 'Winter Voices', 'Acoustic', 8, 2024, NULL),
    (9, 'New Wave', 'Pop', 10, 2025, 28.0),
    (10, 'Grand Finale', 'Mixed', 2, 2025, 90.0),
    (11, 'Castle Echoes', 'Classics', 4, 2025, 75.0),
    (12, 'Late Jazz', 'Jazz', 3, 2025, 38.0);

INSERT INTO singer_in_concert VALUES
    (1, 1), (1, 4), (1, 7),
    (2, 1), (2, 8), (2, 10),
    (3, 2), (3, 5),
    (4, 3), (4, 9), (4, 15),
    (5, 6), (5, 14),
    (6, 8), (6, 10),
    (7, 1), (7, 11),
    (8, 12), (8, 6),
    (9, 7), (9, 4), (9, 11),
    (10, 1), (10, 2), (10, 3), (10, 8),
    (11, 5), (11, 2),
    (12, 9), (12, 15), (12, 3);
